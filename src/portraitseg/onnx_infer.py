"""Portraits with onnxruntime + numpy + OpenCV only: no PyTorch at run time.

For apps that ship the ONNX model written by ``portraitseg export`` instead of PyTorch::

    from portraitseg.io import read_photo, write_image
    from portraitseg.onnx_infer import OnnxPortrait
    portrait = OnnxPortrait("model.onnx")
    photo = read_photo("photo.jpg")               # photo.rgb: (H, W, 3) uint8, EXIF-upright
    out = portrait(photo.rgb)                     # (H, W, 3) uint8
    write_image("photo_portrait.jpg", out, icc_profile=photo.icc_profile, alpha=photo.alpha)

or ``python -m portraitseg.onnx_infer model.onnx photo.jpg photo_portrait.jpg``.

The steps are those of the PyTorch path, simplified: letterbox the photo to the model's input
size (long side = training size, padded bottom/right), run the segmenter, softmax, crop the
letterbox, sum the probabilities of the kept classes (all but background by default) into a
subject alpha, upsample it to the photo, blur the background with the subject removed
(renormalized, so no halo of the subject bleeds into it), and blend ``alpha * photo + (1 - alpha)
* background``. The PyTorch renderer (:func:`portraitseg.render.render_portrait`) adds guided
alpha refinement, lens-disc blur, depth falloff and highlight boosting.

Photos are read and written by :mod:`portraitseg.io` (EXIF orientation, size limit, colour
profile and transparency kept, the atomic verified writer), as by ``portraitseg render``. This
module imports only numpy, OpenCV, Pillow and onnxruntime: no PyTorch (checked by the tests).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import cv2
import numpy as np

from portraitseg.io import (
    InputError,
    WriteError,
    check_destination,
    check_output_not_input,
    image_format,
    output_notes,
    read_photo,
    write_image,
)
from portraitseg.onnx_contract import INPUT_NAME, OUTPUT_NAME, PERSON_NAME
from portraitseg.sizing import long_side
from portraitseg.subject.alpha import class_masks, combine_alpha

#: blur sigma as a fraction of the photo's short side (as ``strength`` of the PyTorch renderer)
DEFAULT_STRENGTH = 0.012
#: model input size when the ONNX file does not record its training size
DEFAULT_SIZE = 256


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (float32)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize the long side to ``size`` and pad bottom/right with black to ``size x size``.

    Returns the model input ``(1, 3, size, size)`` float32 in [0, 1] and the valid ``(h, w)``.
    """
    h, w = long_side(*rgb.shape[:2], size)
    shrink = size < max(rgb.shape[:2])
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.float32)
    canvas[:h, :w] = small.astype(np.float32) / 255.0
    return canvas.transpose(2, 0, 1)[None].copy(), (h, w)


def background_blur(rgb: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the photo with the subject removed and the weights renormalized.

    ``rgb`` ``(H, W, 3)`` float32, ``alpha`` ``(H, W)`` float32 in [0, 1]. Large sigmas are
    blurred at a reduced scale (a Gaussian of sigma >= 4 px loses nothing to it).
    """
    weight = 1.0 - alpha
    stack = np.concatenate([rgb * weight[..., None], weight[..., None]], axis=2)
    h, w = alpha.shape
    factor = max(1.0, sigma / 4.0)
    if factor > 1.0:
        small = cv2.resize(stack, (max(1, round(w / factor)), max(1, round(h / factor))),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        blurred = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        blurred = cv2.GaussianBlur(stack, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return blurred[..., :3] / np.maximum(blurred[..., 3:], 1e-3)


class OnnxPortrait:
    """The ONNX segmenter + a numpy portrait render.

    Args:
        model: the ``.onnx`` file written by ``portraitseg export``.
        keep: class ids kept sharp (default: every class but 0, background).
        size: model input size (default: the training size stored in the model, else 256).
        strength: background blur sigma as a fraction of the photo's short side.
        threads: onnxruntime intra-op threads (``None``: its default, all cores).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        keep: Sequence[int] | None = None,
        size: int | None = None,
        strength: float = DEFAULT_STRENGTH,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        names = json.loads(meta["portraitseg.class_names"]) if meta.get("portraitseg.class_names") else None
        classes = int(meta.get("portraitseg.classes", len(names) if names else 11))
        self.class_names: list[str] = names or [str(i) for i in range(classes)]
        self.keep = tuple(keep) if keep is not None else tuple(range(1, classes))
        if not self.keep or not all(0 <= k < classes for k in self.keep):
            raise ValueError(f"keep={self.keep}: class ids must be in 0..{classes - 1}")
        self.person_head = meta.get("portraitseg.person_head") == "1"
        trained = meta.get("portraitseg.image_size")
        self.size = int(size or (int(trained) if trained else DEFAULT_SIZE))
        self.strength = strength

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """Class probabilities ``(K, h, w)`` at model resolution (letterbox cropped)."""
        batch, (h, w) = letterbox(rgb, self.size)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return softmax(logits[0, :, :h, :w], axis=0)

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """Subject alpha ``(H, W)`` float32 in [0, 1] at the photo's resolution: the pipeline's
        formula (:func:`portraitseg.subject.alpha.combine_alpha`): the kept classes' probability,
        united with the person matte of a model with a person head, minus the dropped classes."""
        batch, (h, w) = letterbox(rgb, self.size)
        names = [OUTPUT_NAME, PERSON_NAME] if self.person_head else [OUTPUT_NAME]
        outputs = self.session.run(names, {INPUT_NAME: batch})
        probs = softmax(outputs[0][0, :, :h, :w], axis=0)
        kept, dropped = class_masks(self.keep, probs.shape[0])
        p_kept = np.tensordot(kept, probs, 1)
        if self.person_head:
            with np.errstate(over="ignore"):  # exp(-x) of a very negative logit: inf -> person 0
                person = 1.0 / (1.0 + np.exp(-outputs[1][0, 0, :h, :w]))
            small = combine_alpha(p_kept, np.tensordot(dropped, probs, 1), person)
        else:
            small = combine_alpha(p_kept)
        alpha = cv2.resize(small.astype(np.float32), (rgb.shape[1], rgb.shape[0]),
                           interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha, 0.0, 1.0)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB ``(H, W, 3)`` uint8 photo -> portrait ``(H, W, 3)`` uint8."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
        alpha = self.alpha(rgb)
        image = rgb.astype(np.float32)
        sigma = max(0.5, self.strength * min(rgb.shape[:2]))
        background = background_blur(image, alpha, sigma)
        out = alpha[..., None] * image + (1.0 - alpha[..., None]) * background
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m portraitseg.onnx_infer MODEL.onnx INPUT OUTPUT``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m portraitseg.onnx_infer MODEL.onnx INPUT_IMAGE OUTPUT_IMAGE", file=sys.stderr)
        return 2
    model, src, dst = args
    try:  # the output: never an input, a folder, a device or a FIFO; a format we write
        check_output_not_input(dst, "OUTPUT_IMAGE", {"INPUT_IMAGE": src, "MODEL.onnx": model})
        check_destination(dst)
        image_format(dst)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not os.path.isfile(model):
        print(f"error: {model}: no such ONNX model file (write one with `portraitseg export --ckpt ... "
              "--onnx model.onnx`)", file=sys.stderr)
        return 2
    try:  # the project's reader: EXIF, size limit, colour profile, transparency; named errors
        photo = read_photo(src)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        portrait = OnnxPortrait(model)
    except Exception as err:  # noqa: BLE001 - onnxruntime's error types (InvalidProtobuf, ...) are not public
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {model}: not an ONNX model onnxruntime can load ({first})", file=sys.stderr)
        return 2
    for note in photo.notes + output_notes(photo, dst):
        print(f"note: {src}: {note}", file=sys.stderr)
    try:
        write_image(dst, portrait(photo.rgb), icc_profile=photo.icc_profile, alpha=photo.alpha)
    except (InputError, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - onnxruntime / OpenCV failures: one line, no traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"error: {src}: rendering failed ({type(err).__name__}: {first})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
