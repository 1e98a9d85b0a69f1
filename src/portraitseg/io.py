"""Reading and writing user images and label maps, with errors that name the file.

Every decoder in the project goes through here (dataset, render CLI, benchmarks), so EXIF
orientation, colour modes, bit depth and size limits are handled once.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default decode limit: 12 MP photos and far beyond, but not a decompression bomb.
DEFAULT_MAX_PIXELS = 100_000_000

# We enforce our own limit (with a clear message) before decoding; PIL's own check would raise
# a DecompressionBombError with a less helpful text, or only warn.
Image.MAX_IMAGE_PIXELS = None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (archives and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class InputError(ValueError):
    """A user-supplied file cannot be used; the message names the file and the reason."""


def _open(path: str | os.PathLike, max_pixels: int | None) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be opened: {err}") from None
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise InputError(
            f"{path}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the limit of {max_pixels / 1e6:.1f} MP "
            "(raise max_pixels if this image is genuine)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's "Corrupt EXIF data" warnings
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: corrupt or truncated image data ({err})") from None
    return img


def _to_uint8(img: Image.Image) -> Image.Image:
    """Reduce 16/32-bit single-channel images to 8 bits by scaling, not clipping."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if img.mode.startswith("I;16") or arr.max() > 255 else 255
        arr = np.clip(arr * 255.0 / top + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a photo as RGB ``(H, W, 3)`` uint8, upright per its EXIF orientation.

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit inputs are converted.
    Raises :class:`InputError` naming the file for anything unusable.
    """
    img = _open(path, max_pixels)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    img = _to_uint8(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img).copy()


def read_label(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a class-id label map as ``(H, W)`` uint8 (grayscale or palette-indexed PNG)."""
    img = _open(path, max_pixels)
    if img.mode in ("L", "P"):
        return np.asarray(img).copy()
    if img.mode.startswith("I"):
        arr = np.asarray(img)
        if arr.max() > 255:
            raise InputError(f"{path}: label values up to {arr.max()} do not fit class ids")
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)
        channels = arr[..., :1] if img.mode == "LA" else arr[..., :3]
        if np.all(channels == channels[..., :1]):
            return arr[..., 0].copy()
        raise InputError(
            f"{path}: colour label image (mode {img.mode}); labels must be single-channel "
            "class-id PNGs (pixel value = class id)"
        )
    raise InputError(f"{path}: unsupported label image mode {img.mode}")


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write RGB ``(H, W, 3)`` uint8 to ``path``; the format follows the suffix.

    Written to a temporary name first and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix)
    if fmt is None:
        raise InputError(f"{path}: unsupported output format {suffix!r}")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format=fmt, **kwargs)
    os.replace(tmp, path)
