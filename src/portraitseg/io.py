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

from portraitseg.config import DEFAULT_MAX_PIXELS  # the decode limit (one value, see config)

#: Output formats :func:`write_image` writes, by suffix (Pillow format names).
WRITE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
#: Image file suffixes taken as photos wherever files are listed (dataset layouts, folders given to
#: ``portraitseg render``): the written formats plus GIF and the Netpbm family, which
#: :func:`read_image` decodes too.
IMAGE_SUFFIXES = (*WRITE_FORMATS, ".gif", ".ppm", ".pgm", ".pbm", ".pnm")


class MultiFrameWarning(UserWarning):
    """An animated GIF, multi-page TIFF (or other multi-frame file) was read: only frame 1 is used."""

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


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: equal once resolved (symlinks, ``..``), or the same
    inode (hard links); a path that does not exist is only compared by its resolved name."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_not_input(out: str | os.PathLike, option: str, inputs: dict[str, str | os.PathLike]) -> None:
    """Refuse an output path that is (or resolves to) one of the command's input files.

    Args:
        out: the file the command is about to write.
        option: its option name, for the message (``--out``).
        inputs: ``{option name: path}`` of the files the command reads.

    Raises:
        InputError: naming both options, before anything is written.
    """
    for name, path in inputs.items():
        if path is not None and same_file(out, path):
            raise InputError(
                f"{option} {out} is the same file as {name} {path}: writing it would destroy the "
                f"input; choose another {option} path"
            )


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
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":  # MPO: phone JPEGs carrying a preview or depth frame
        warnings.warn(f"{path}: has {frames} frames (an animated or multi-page image); only the first "
                      "is used", MultiFrameWarning, stacklevel=2)
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


def read_matte(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a soft matte as ``(H, W)`` uint8, 255 = fully foreground.

    Grayscale and palette files give their values (0/1 binary masks are scaled to 0/255); files
    with an alpha channel (RGBA, LA: a cut-out layer) give the alpha.
    """
    img = _open(path, max_pixels)
    if img.mode in ("RGBA", "LA", "PA"):
        return np.asarray(img.convert("RGBA"))[..., 3].copy()
    matte = read_label(path, max_pixels)
    return matte * np.uint8(255) if matte.max() == 1 else matte


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write RGB ``(H, W, 3)`` uint8 to ``path``; the format follows the suffix.

    Written to a temporary name first (``.<name>.<pid>.tmp``, so concurrent writers never share
    one) and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = WRITE_FORMATS.get(suffix)
    if fmt is None:
        raise InputError(f"{path}: unsupported output format {suffix!r}")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format=fmt, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
