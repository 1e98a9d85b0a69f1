"""Paths and formats shared by the readers and the writers, and the error naming a user's file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Output formats :func:`write_image` writes, by suffix (Pillow format names).
WRITE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
#: Image file suffixes taken as photos wherever files are listed (dataset layouts, folders given to
#: ``portraitseg render``): the written formats plus GIF and the Netpbm family, which
#: :func:`read_image` decodes too.
IMAGE_SUFFIXES = (*WRITE_FORMATS, ".gif", ".ppm", ".pgm", ".pbm", ".pnm")


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
