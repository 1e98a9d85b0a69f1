"""Decoding user images and label maps, with errors that name the file.

Every decoder in the project goes through here (dataset, render CLI, ONNX runner, benchmarks), so
EXIF orientation, colour modes, bit depth, size limits, colour profiles and transparency are
handled once (:func:`read_photo`).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from portraitseg.config import DEFAULT_MAX_PIXELS  # the decode limit (one value, see config)
from portraitseg.io.files import InputError


class MultiFrameWarning(UserWarning):
    """An animated GIF, multi-page TIFF (or other multi-frame file) was read: only frame 1 is used."""

# We enforce our own limit (with a clear message) before decoding; PIL's own check would raise
# a DecompressionBombError with a less helpful text, or only warn.
Image.MAX_IMAGE_PIXELS = None


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


#: The colour transparent pixels are composited on before rendering (white), RGB.
TRANSPARENT_BACKGROUND = (255, 255, 255)



@dataclass
class Photo:
    """A decoded photo and what its outputs must carry over (:func:`read_photo`).

    Attributes:
        rgb: ``(H, W, 3)`` uint8, upright per EXIF; transparent pixels composited on
            :data:`TRANSPARENT_BACKGROUND`.
        alpha: ``(H, W)`` uint8 of a photo with transparent pixels (255 = opaque), else None.
        icc_profile: the embedded RGB colour profile (the pixels are in its colour space, and
            so are the rendered ones: write it with them), else None.
        notes: what was done to the file that a user should know (a profile converted, ...).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)


def _profile_space(profile: bytes) -> str:
    """The colour space of an ICC profile's header (``RGB``, ``GRAY``, ``CMYK``...)."""
    return profile[16:20].decode("ascii", "replace").strip() if len(profile) >= 20 else "?"


def _to_srgb(img: Image.Image, profile: bytes) -> Image.Image | None:
    """Convert an image with a non-RGB embedded profile (grayscale, CMYK) to sRGB, or None."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # noqa: BLE001 - a broken or unsupported profile: fall back to no profile
        return None


def read_photo(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode a photo for rendering: RGB pixels, its transparency and its colour profile.

    Grayscale, palette, CMYK and 16-bit inputs are converted to RGB. An embedded RGB ICC
    profile (Display P3, Adobe RGB...) is returned as is; a grayscale or CMYK profile is applied
    (the pixels converted to sRGB). Transparent pixels (RGBA, LA, a palette or colour-key
    transparency) are composited on :data:`TRANSPARENT_BACKGROUND` and the alpha is returned.
    Raises :class:`InputError` naming the file for anything unusable.
    """
    img = _open(path, max_pixels)
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":  # MPO: phone JPEGs carrying a preview or depth frame
        warnings.warn(f"{path}: has {frames} frames (an animated or multi-page image); only the first "
                      "is used", MultiFrameWarning, stacklevel=3)
    profile = img.info.get("icc_profile") or None
    try:  # in place: without an orientation to apply, a copy would cost 36 MB at 12 MP
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    img = _to_uint8(img)
    notes: list[str] = []
    if profile is not None and _profile_space(profile) != "RGB":
        space = _profile_space(profile)
        converted = _to_srgb(img, profile) if img.mode in ("L", "CMYK", "RGB") else None
        notes.append(f"converted from its embedded {space} colour profile to sRGB" if converted is not None
                     else f"its embedded {space} colour profile could not be applied; read as sRGB")
        img, profile = (converted if converted is not None else img), None
    alpha = None
    if getattr(img, "has_transparency_data", img.mode in ("RGBA", "LA", "PA")):
        rgba = np.asarray(img.convert("RGBA"))
        if rgba[..., 3].min() < 255:
            alpha = rgba[..., 3].copy()
            a = alpha[..., None].astype(np.uint16)
            bg = np.asarray(TRANSPARENT_BACKGROUND, np.uint16)
            rgb = ((rgba[..., :3] * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
            return Photo(rgb, alpha, profile, notes)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return Photo(np.asarray(img).copy(), None, profile, notes)


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a photo as RGB ``(H, W, 3)`` uint8, upright per its EXIF orientation: the pixels of
    :func:`read_photo` (transparent pixels composited on :data:`TRANSPARENT_BACKGROUND`).

    Raises :class:`InputError` naming the file for anything unusable.
    """
    return read_photo(path, max_pixels).rgb


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
