"""The contract of an exported ONNX model: tensor names, opsets, traced size (no imports, so the
command line, the exporter and the onnxruntime-only runtime all read it at no cost).

The graph takes ``image`` float32 ``(B, 3, H, W)`` RGB in [0, 1] and returns ``logits`` float32
``(B, K, H, W)``, plus ``person`` ``(B, 1, H, W)`` (person-matte logits) for a model with a person head.
"""

from __future__ import annotations

DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)
#: traced input size when neither --image-size nor the checkpoint gives one
DEFAULT_TRACE_SIZE = 256
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: the second output of a model with a person head: person-matte logits (B, 1, H, W)
PERSON_NAME = "person"
#: max |logit difference| onnxruntime vs PyTorch accepted by the export check (float32)
PARITY_ATOL = 1e-4
MISSING_ONNX = ("ONNX export needs the onnx package: pip install 'portraitseg[export]' "
                "(onnx + onnxruntime for the parity check)")
