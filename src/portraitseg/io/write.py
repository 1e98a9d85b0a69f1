"""Writing the project's files: one writer, :func:`atomic_write_all` (temporary file in the
destination folder, fsync, verification, rename; nothing left under the final name on failure;
folders, devices and FIFOs refused), with :func:`write_image`, :func:`write_torch` and
:func:`write_figure` on top of it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from portraitseg.io.files import WRITE_FORMATS, InputError
from portraitseg.io.read import TRANSPARENT_BACKGROUND, Photo

#: Output formats that carry an alpha channel (a transparent photo's portrait keeps its alpha).
ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF"})
#: Output formats that carry an embedded ICC colour profile.
ICC_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})


class OutputError(InputError):
    """An output path the project refuses to write: it exists and is not a regular file (a
    folder, device node, FIFO, socket), or it exists and replacing it was not asked for. The
    message names the path and the fix."""


class WriteError(OSError):
    """Writing an output failed (disk full, file size limit, a short or unverifiable write): no
    file was left under the output's name and an existing file there is unchanged."""


#: a verification of a written temporary file: ``check(tmp, data)`` raises ValueError to refuse it
WriteCheck = Callable[[Path, "bytes | memoryview"], None]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry to disk (after a rename); a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_destination(path: str | os.PathLike, replace: bool = True) -> None:
    """Refuse to write ``path`` unless it is absent or (with ``replace``) a regular file, or a
    symbolic link to one (the link itself is replaced, never what it points at).

    Raises:
        OutputError: naming the path, what it is and the fix.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    link = stat.S_ISLNK(st.st_mode)
    if link:
        try:
            st = os.stat(path)
        except OSError:
            raise OutputError(f"{path}: is a broken symbolic link; remove it or choose another output "
                              "path") from None
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a device node" if stat.S_ISCHR(st.st_mode)
            or stat.S_ISBLK(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else None)
    if kind is not None:
        target = " (through a symbolic link)" if link else ""
        fix = ("a file inside it" if kind == "a folder" else
               f"a file in a folder, e.g. {Path('out') / (path.name or 'out')}")
        raise OutputError(f"{path}: is {kind}{target}, not a file; give the path of {fix}")
    if not replace:
        what = "a symbolic link to a file" if link else "a file"
        raise OutputError(f"{path}: {what} already exists; choose another output path (it is not "
                          "replaced without being asked to)")


#: the project's temporary files: ``.<name>.<8 hex>.<pid>.tmp`` (:func:`temporary_name`)
TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<token>[0-9a-f]{8})\.(?P<pid>\d+)\.tmp")


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh hidden name next to ``path`` for a file (or link) on its way to ``path``:
    ``.<name>.<8 random hex>.<pid>.tmp``, so that :func:`remove_stale_temporaries` can tell the
    leftovers of a killed process from anything else."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}.tmp")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of :func:`temporary_name` in ``directory`` (files, or links) whose
    process is gone (killed mid-write); every other file is left alone (unlinking a link never
    touches what it points at).

    Returns the paths removed.
    """
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        match = TEMPORARY.fullmatch(path.name)
        if match and (path.is_file() or path.is_symlink()) and not _pid_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file next to ``path`` (:func:`temporary_name`), created exclusively;
    ``(path, fd)``."""
    while True:
        tmp = temporary_name(path)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[written:]


def _write_error(path: Path, err: BaseException, existed: bool) -> WriteError:
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        cause = "the disk is full or the file size limit was reached; free space or write elsewhere"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = "no permission to write there; choose a writable folder"
    else:
        cause = f"{type(err).__name__}: {getattr(err, 'strerror', None) or err}"
    kept = "; the existing file is unchanged" if existed else "; nothing was left under that name"
    return WriteError(f"{path}: could not be written ({cause}){kept}")


def atomic_write_all(
    outputs: Sequence[tuple[str | os.PathLike, bytes | memoryview]],
    replace: bool = True,
    durable: bool = True,
    check: WriteCheck | None = None,
) -> list[Path]:
    """Write files all or nothing: the one output writer of the project.

    Each ``(path, data)`` goes to a temporary file in its destination folder, is flushed and
    fsynced (``durable``), verified (the file's size equals ``len(data)``, then ``check(tmp,
    data)`` if given, e.g. an image decode check) and only when every file is verified are they
    renamed over their paths (``os.replace``) and the folders fsynced. On any failure every
    temporary is removed: nothing is left under a final name and existing files are unchanged.

    Args:
        outputs: ``(path, bytes)`` pairs; missing parent folders are created.
        replace: allow replacing an existing regular file (or a symbolic link to one: the link is
            replaced); without it an existing path is refused.
        durable: fsync files and folders (off only for files that are cheap to regenerate).
        check: extra verification of a written temporary; raises to refuse it.

    Raises:
        OutputError: a path is a folder, device node, FIFO or socket (or exists without
            ``replace``), before anything is written.
        WriteError: writing or verifying failed.
    """
    items = [(Path(p), data) for p, data in outputs]
    for path, _ in items:
        check_destination(path, replace)
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []  # final names that did not exist before, renamed into place
    try:
        for path, data in items:
            existed = os.path.lexists(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp, fd = _temporary(path)
            except OSError as err:
                raise _write_error(path, err, existed) from None
            staged.append((tmp, path))
            try:
                try:
                    _write_all(fd, data)
                    if durable:
                        os.fsync(fd)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                if size != len(memoryview(data).cast("B")):
                    raise OSError(errno.EIO, f"wrote {size} of {len(data)} bytes")
                if check is not None:
                    check(tmp, data)
            except OSError as err:
                raise _write_error(path, err, existed) from None
            except ValueError as err:  # a check's refusal
                raise WriteError(f"{path}: the written file does not verify ({err}); nothing was "
                                 "left under that name") from None
        for tmp, path in staged:
            check_destination(path, replace)  # it may have changed while we wrote
            new = not os.path.lexists(path)
            os.replace(tmp, path)
            if new:
                created.append(path)
    except BaseException:
        for tmp in [tmp for tmp, _ in staged] + created:  # all or nothing
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    if durable:
        for folder in {path.parent for _, path in staged}:
            fsync_dir(folder)
    return [path for _, path in staged]


def atomic_write(path: str | os.PathLike, data: bytes | memoryview, replace: bool = True,
                 durable: bool = True, check: WriteCheck | None = None) -> Path:
    """Write one file through :func:`atomic_write_all` (same guarantees and errors)."""
    return atomic_write_all([(path, data)], replace=replace, durable=durable, check=check)[0]


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format written for ``path``'s suffix (:data:`WRITE_FORMATS`).

    Raises:
        InputError: an unsupported suffix, naming the formats.
    """
    suffix = Path(path).suffix.lower()
    fmt = WRITE_FORMATS.get(suffix)
    if fmt is None:
        raise InputError(f"{path}: unsupported output format {suffix!r}; use one of "
                         f"{' '.join(WRITE_FORMATS)}")
    return fmt


def encode_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    quality: int = 95,
    icc_profile: bytes | None = None,
    alpha: np.ndarray | None = None,
) -> bytes:
    """Encode RGB ``(H, W, 3)`` (or grayscale ``(H, W)``) uint8 in the format of ``path``'s
    suffix, with ``icc_profile`` embedded (:data:`ICC_FORMATS`) and ``alpha`` ``(H, W)`` uint8 as
    its alpha channel (:data:`ALPHA_FORMATS`; other formats are written opaque)."""
    fmt = image_format(path)
    img = Image.fromarray(rgb)
    if alpha is not None and fmt in ALPHA_FORMATS:
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha {alpha.shape} does not match the image {rgb.shape[:2]}")
        img = img.convert("RGB")
        img.putalpha(Image.fromarray(alpha))
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if icc_profile and fmt in ICC_FORMATS:
        kwargs["icc_profile"] = icc_profile
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_torch(path: str | os.PathLike, obj: Any, replace: bool = True) -> Path:
    """``torch.save(obj)`` through :func:`atomic_write` (serialized in memory first, then written,
    size-checked and checked to be a complete zip archive, as torch files are). PyTorch is
    imported here, on first use, so that this module stays free of it."""
    import torch

    check_destination(path, replace)
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getbuffer(), replace=replace, check=check_zip)


def write_figure(path: str | os.PathLike, fig: Any, **savefig: Any) -> Path:
    """A matplotlib figure through :func:`atomic_write` (rendered in memory in the format of
    ``path``'s suffix, decode-checked)."""
    check_destination(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return atomic_write(path, buf.getbuffer(), check=check_image)


def check_zip(path: Path, data: bytes | memoryview) -> None:
    """Verify a written torch or TorchScript file cheaply: a complete zip archive (its central
    directory at the end). Raises ValueError otherwise."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError("not a complete torch (zip) file")


def output_notes(photo: Photo, path: str | os.PathLike) -> list[str]:
    """What a user should know about writing ``photo``'s render to ``path``: how its
    transparency was handled, and a colour profile the format cannot hold."""
    fmt = image_format(path)
    notes = []
    if photo.alpha is not None:
        bg = "white" if TRANSPARENT_BACKGROUND == (255, 255, 255) else f"RGB {TRANSPARENT_BACKGROUND}"
        kept = ("the output keeps the photo's alpha" if fmt in ALPHA_FORMATS else
                f"{fmt} cannot hold an alpha channel, so the output is opaque")
        notes.append(f"has transparent pixels: rendered composited on {bg}; {kept}")
    if photo.icc_profile is not None and fmt not in ICC_FORMATS:
        notes.append(f"{fmt} cannot hold its colour profile: the output is written without it")
    return notes


def check_image(path: Path, data: bytes | memoryview) -> None:
    """Verify a written image cheaply: it opens and its structure checks (Pillow's ``verify``:
    chunk CRCs of a PNG, ...). Raises ValueError otherwise."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a broken file
        raise ValueError(f"not a readable image: {err}") from None


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    quality: int = 95,
    icc_profile: bytes | None = None,
    alpha: np.ndarray | None = None,
    replace: bool = True,
) -> Path:
    """Write an image (:func:`encode_image`) through :func:`atomic_write` (temporary file, fsync,
    size and decode check, rename): never half a file under ``path``.

    Raises:
        InputError: an unsupported suffix; OutputError: ``path`` is a folder, device, FIFO...
        WriteError: the disk is full or the write did not verify.
    """
    check_destination(path, replace)  # before encoding a large image for nothing
    return atomic_write(path, encode_image(path, rgb, quality, icc_profile, alpha), replace=replace,
                        check=check_image)
