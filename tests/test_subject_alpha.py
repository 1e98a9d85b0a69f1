"""The one subject-alpha formula: masks, numpy/torch agreement, and the ONNX runner's parity with
the PyTorch pipeline where a dropped class lies inside the person."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from portraitseg.classes import CLASS_NAMES, class_ids
from portraitseg.subject.alpha import class_masks, combine_alpha, parse_alpha


def test_class_masks_keep_and_drop():
    kept, dropped = class_masks((1, 10), 11)
    assert kept.dtype == np.float32 and kept.tolist() == [0, 1] + [0] * 8 + [1]
    assert dropped.tolist() == [0, 0] + [1] * 8 + [0]  # background is never "dropped"
    with pytest.raises(ValueError, match="0..10"):
        class_masks((11,), 11)
    with pytest.raises(ValueError, match="at least one"):
        class_masks((), 11)


def test_combine_alpha_same_on_numpy_and_torch():
    rng = np.random.default_rng(0)
    p_kept, p_drop, person = (rng.random((2, 1, 5, 7), dtype=np.float32) for _ in range(3))
    expected = np.clip(np.maximum(person, p_kept) * (1 - p_drop), 0, 1)
    np.testing.assert_allclose(combine_alpha(p_kept, p_drop, person), expected, rtol=0, atol=0)
    got = combine_alpha(*(torch.from_numpy(a) for a in (p_kept, p_drop, person)))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(combine_alpha(p_kept * 2), np.clip(p_kept * 2, 0, 1))


def test_parse_alpha_drops_a_class_inside_the_person():
    probs = torch.zeros(1, 11, 2, 2)
    probs[0, 0, 0, 0] = 1.0  # background, outside the person
    probs[0, 1, 0, 1] = 1.0  # skin
    probs[0, 2, 1, 0] = 1.0  # left brow (dropped below)
    probs[0, 10, 1, 1] = 1.0  # hair
    person = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    kept, dropped = (torch.from_numpy(m) for m in class_masks((1, 10), 11))
    alpha = parse_alpha(probs, person, kept, dropped)
    assert alpha.tolist() == [[[[0.0, 1.0], [0.0, 1.0]]]]
    assert parse_alpha(probs, person, kept, dropped, "face").tolist() == [[[[0.0, 1.0], [0.0, 1.0]]]]
    with pytest.raises(ValueError, match="masks"):
        parse_alpha(probs, person, kept[:3], dropped)


def test_onnx_alpha_matches_pytorch_with_a_dropped_class(tmp_path):
    """The onnxruntime runner and the PyTorch formula agree on a model with a person head, keeping
    hair and skin (so brows, eyes, nose and lips inside the person are blurred)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from portraitseg.models import create_model
    from portraitseg.onnx_export import export_onnx
    from portraitseg.onnx_infer import OnnxPortrait, letterbox

    torch.manual_seed(0)
    net = create_model("fcn", "tu-mobilenetv3_small_050", None, 11, person_head=True).eval()
    for m in net.modules():  # random statistics, so the outputs are far from uniform
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.1, 0.5)
    path = export_onnx(net, tmp_path / "m.onnx", image_size=(64, 64),
                       metadata={"portraitseg.image_size": "64",
                                 "portraitseg.class_names": json.dumps(list(CLASS_NAMES))})
    keep = class_ids("hair,skin")
    runner = OnnxPortrait(path, keep=keep)
    assert runner.person_head
    rgb = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    batch, (h, w) = letterbox(rgb, 64)
    with torch.no_grad():
        logits, person = net.segment(torch.from_numpy(batch))
        probs = logits[..., :h, :w].softmax(1)
        kept, dropped = (torch.from_numpy(m) for m in class_masks(keep, 11))
        expected = parse_alpha(probs, person[..., :h, :w].sigmoid(), kept, dropped)[0, 0].numpy()
    p_dropped = (probs[0] * dropped[:, None, None]).sum(0).numpy()
    assert p_dropped.max() > 0.05  # the dropped classes matter in this comparison
    np.testing.assert_allclose(runner.alpha(rgb), expected, atol=1e-5)  # same size: no resize
