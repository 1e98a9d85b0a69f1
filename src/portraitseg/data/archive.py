"""Safe extraction of dataset archives (zip and tar), and the errors of getting a dataset.

A member with an absolute path, a ``..`` component, a link leading outside the destination (or
through another link) or a device file aborts the whole extraction; members are validated before
anything is written.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or extraction failed; the message says why and what to do."""



class UnsafeArchiveError(DownloadError):
    """The archive has a member that would land outside the destination (or is a device)."""



def _member_parts(name: str, archive: Path) -> list[str]:
    """Validate an archive member name; return its path components."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to "
                                 "extract this archive")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..' (path traversal); "
                                 "refusing to extract this archive")
    return parts


def _through_link(parts: list[str], links: set[tuple[str, ...]]) -> bool:
    return any(tuple(parts[:i]) in links for i in range(1, len(parts)))


def _check_link(name: str, parts: list[str], target: str, links: set[tuple[str, ...]],
                archive: Path, relative_to_member: bool) -> None:
    """Refuse a (sym/hard) link whose target leaves the archive root or passes through a link."""
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise UnsafeArchiveError(f"{archive}: link {name!r} -> {target!r} points to an absolute "
                                 "path; refusing to extract this archive")
    resolved = list(parts[:-1]) if relative_to_member else []
    comps = [c for c in target.split("/") if c not in ("", ".")]
    for i, comp in enumerate(comps):
        if comp == "..":
            if not resolved:
                raise UnsafeArchiveError(f"{archive}: link {name!r} -> {target!r} escapes the "
                                         "destination; refusing to extract this archive")
            resolved.pop()
            continue
        resolved.append(comp)
        if i < len(comps) - 1 and tuple(resolved) in links:
            raise UnsafeArchiveError(f"{archive}: link {name!r} -> {target!r} resolves through "
                                     "another link; refusing to extract this archive")


def _extract_zip(archive: Path, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links: set[tuple[str, ...]] = set()
        checked = []
        for info in infos:
            parts = _member_parts(info.filename, archive)
            if _through_link(parts, links):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} lies below a "
                                         "symbolic link; refusing to extract this archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                _check_link(info.filename, parts, zf.read(info).decode("utf-8", "replace"),
                            links, archive, relative_to_member=True)
                links.add(tuple(parts))
            checked.append((info, parts))
        for info, parts in checked:  # links are written as small text files, as zipfile does
            if not parts:
                continue
            target = out.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)


def _extract_tar(archive: Path, out: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        links: set[tuple[str, ...]] = set()
        for m in members:
            parts = _member_parts(m.name, archive)
            if _through_link(parts, links):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} lies below a symbolic "
                                         "link; refusing to extract this archive")
            if m.issym():
                _check_link(m.name, parts, m.linkname, links, archive, relative_to_member=True)
                links.add(tuple(parts))
            elif m.islnk():
                _check_link(m.name, parts, m.linkname, links, archive, relative_to_member=False)
                if tuple(_member_parts(m.linkname, archive)) in links:
                    raise UnsafeArchiveError(f"{archive}: hard link {m.name!r} points to a "
                                             "symbolic link; refusing to extract this archive")
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, FIFO or "
                                         "other special file; refusing to extract this archive")
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tf.extractall(out, members=members, **kwargs)
        except getattr(tarfile, "FilterError", ()) as err:  # second line of defence (Python's own checks)
            raise UnsafeArchiveError(f"{archive}: {err}; refusing to extract this archive") from None


def extract(archive: str | os.PathLike, out: str | os.PathLike) -> None:
    """Extract ``archive`` into the (empty) folder ``out``, refusing unsafe members.

    Raises:
        UnsafeArchiveError: absolute paths, ``..``, links leaving ``out`` or through other links,
            device files. Members are validated before anything is written.
        DownloadError: not a zip or tar archive.
    """
    archive, out = Path(archive), Path(out)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, out)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, out)
    else:
        raise DownloadError(f"{archive}: not a zip or tar archive (supported: .zip, .tar, "
                            ".tar.gz/.tgz, .tar.bz2, .tar.xz)")

