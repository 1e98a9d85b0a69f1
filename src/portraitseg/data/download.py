"""Fetch and unpack a dataset archive: streamed, resumable, checksummed, safely extracted.

``download(url_or_path, dest)`` accepts an ``http(s)://`` URL, a ``file://`` URL or a local archive
path. A URL is streamed to ``<dest>/.download/<name>.part`` (resumed with an HTTP ``Range``
request when a partial file exists), renamed when complete and checked against ``sha256``. The
archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) is extracted into a
temporary folder inside ``dest`` and moved into place only when every member was extracted; a
member with an absolute path, a ``..`` component, a link leading outside ``dest`` or a device
file aborts the whole extraction. If all members share one top-level folder, its contents become
the contents of ``dest``. An existing non-empty ``dest`` is only replaced with ``force=True``.

Only the standard library talks to the network (``urllib``), with a short timeout: offline, the
error says what to download, from where, and where to put it. The extraction itself is
:func:`portraitseg.data.archive.extract`.
"""

from __future__ import annotations

import argparse
import http.client
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from portraitseg.argtypes import float_in
from portraitseg.data.archive import CHUNK, DownloadError, UnsafeArchiveError, extract
from portraitseg.io import sha256_file

__all__ = [
    "DATASETS", "SMITH_URL", "ChecksumError", "DestinationError", "DownloadError", "UnsafeArchiveError",
    "add_download_parser", "download", "extract", "run_download", "where_to_get_helen",
]

DOWNLOAD_DIR = ".download"
SMITH_URL = "https://pages.cs.wisc.edu/~lizhang/projects/face-parsing/SmithCVPR2013_dataset_resized.zip"

#: Known datasets: where the command looks by default.
DATASETS = {
    "helen": {"url": SMITH_URL, "sha256": None, "dest": Path("data/helen")},
}


class ChecksumError(DownloadError):
    """The file's sha256 differs from the expected one."""


class DestinationError(ValueError):
    """``--dest`` cannot be used as given (a usage error: nothing was written or deleted)."""


def where_to_get_helen(dest: str | os.PathLike) -> str:
    """Instructions for getting Helen by hand, for messages shown when a download fails."""
    return (
        "To get Helen without this downloader, fetch one of these on a machine with network "
        "access:\n"
        f"  - the Smith et al. release: {SMITH_URL} (unpacks to SmithCVPR2013_dataset_resized/);\n"
        "  - HELEN* (Lin et al. 2019): train/ and test/ folders (images/ + labels/) with "
        "train.txt and test.txt;\n"
        "  - or any images/ + masks/ folder pair (masks = class-id PNGs).\n"
        f"Then either unpack it into {dest}/ yourself, or copy the archive to this machine and run "
        f"`python -m portraitseg.data download helen --url /path/to/archive.zip --dest {dest}`. "
        f"Train with `python train.py data=helen data.root={dest}`."
    )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def _is_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme.lower() in ("http", "https")


def _archive_name(url: str) -> str:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def _is_nonempty_dataset(dest: Path) -> bool:
    return dest.is_dir() and any(p.name != DOWNLOAD_DIR for p in dest.iterdir())


# --------------------------------------------------------------------------------------------
# Fetching.


def _progress(total: int | None, done: int, description: str, enabled: bool):
    """A rich progress bar (disabled when asked or when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                        console=Console(stderr=True), disable=not (enabled and sys.stderr.isatty()))
    task = progress.add_task(description, total=total, completed=done)
    return progress, task


def _fetch(url: str, part: Path, timeout: float, show_progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "portraitseg-downloader", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # our partial file is already as long as the resource
            return
        raise DownloadError(f"{url}: the server answered HTTP {err.code} {err.reason}; check the "
                            f"URL.\n{where_to_get_helen(part.parent.parent)}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {url} ({reason}); this machine seems to be offline or "
                            f"the server is down.\n{where_to_get_helen(part.parent.parent)}") from None

    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                raise DownloadError(f"{url}: the server resumed at the wrong offset "
                                    f"({response.headers.get('Content-Range')!r}); delete {part} "
                                    "and try again")
            mode, done = "ab", have
        else:  # 200: a full body (the server may ignore Range)
            mode, done = "wb", 0
        total = done + length if length is not None else None
        progress, task = _progress(total, done, part.name.removesuffix(".part"), show_progress)
        try:
            with progress, open(part, mode) as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    progress.update(task, completed=done)
        except (http.client.IncompleteRead, OSError, TimeoutError) as err:
            raise DownloadError(f"{url}: transfer interrupted after {_human(done)} ({err}); run "
                                f"the same command again to resume from {part}") from None
    if total is not None and done < total:
        raise DownloadError(f"{url}: transfer interrupted after {_human(done)} of {_human(total)}; "
                            f"run the same command again to resume from {part}")


def _install(archive: Path, dest: Path, force: bool) -> None:
    """Extract into a staging folder inside ``dest``, then move the result into place."""
    work = dest / DOWNLOAD_DIR
    work.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=work))
    try:
        extract(archive, staging)
        entries = list(staging.iterdir())
        content = staging
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            content = entries[0]  # a single top-level folder: its contents are the dataset
        if not any(content.iterdir()):
            raise DownloadError(f"{archive}: the archive is empty")
        if _is_nonempty_dataset(dest):
            if not force:  # appeared while we were downloading
                raise FileExistsError(f"{dest} is not empty; pass --force (force=True) to replace it")
            for old in dest.iterdir():
                if old.name == DOWNLOAD_DIR:
                    continue
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
        for entry in content.iterdir():
            os.replace(entry, dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Public entry point.


def download(url_or_path: str | os.PathLike, dest: str | os.PathLike, sha256: str | None = None,
             force: bool = False, timeout: float = 10.0, progress: bool = True) -> Path:
    """Download (or take a local) dataset archive, verify it and extract it into ``dest``.

    Args:
        url_or_path: ``http(s)://`` or ``file://`` URL, or a local archive path.
        dest: dataset folder to create; an existing non-empty one needs ``force``.
        sha256: expected hex digest of the archive; on mismatch a downloaded file is deleted
            (a local file is left alone) and :class:`ChecksumError` is raised. Without it the
            digest is printed so it can be pinned.
        force: replace the contents of an existing non-empty ``dest``.
        timeout: seconds to wait for the connection and for each read (fail fast when offline).
        progress: show a progress bar (only on a terminal).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.
    """
    dest = Path(dest)
    expected = _check_sha256(sha256)
    source = os.fspath(url_or_path)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a directory; choose another --dest")
    local = _local_path(source)
    if local is not None and dest.resolve() in local.resolve().parents:
        raise DestinationError(
            f"--url {local} lies inside --dest {dest}, whose contents the dataset replaces (with "
            f"--force they would be deleted, the archive with them); move the archive out of {dest} "
            "or choose another --dest")
    if _is_nonempty_dataset(dest) and not force:
        raise FileExistsError(f"{dest} already exists and is not empty; pass --force "
                              "(force=True) to replace its contents, or choose another --dest")

    created = not dest.exists()
    try:
        return _download(source, dest, expected, force, timeout, progress)
    finally:  # leave no empty folders behind; a partial download (for resuming) stays
        work = dest / DOWNLOAD_DIR
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()


def _local_path(source: str) -> Path | None:
    """The archive path of a local ``source`` (a path or ``file://`` URL); None for http(s)."""
    if source.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    return None if _is_url(source) else Path(source)


def _download(source: str, dest: Path, expected: str | None, force: bool, timeout: float,
              progress: bool) -> Path:
    downloaded = False
    local = _local_path(source)
    if local is None:
        work = dest / DOWNLOAD_DIR
        work.mkdir(parents=True, exist_ok=True)
        archive = work / _archive_name(source)
        part = archive.with_name(archive.name + ".part")
        if not archive.exists():
            t0 = time.perf_counter()
            _fetch(source, part, timeout, progress)
            os.replace(part, archive)
            print(f"downloaded {source} ({_human(archive.stat().st_size)}, "
                  f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        downloaded = True
    else:
        archive = local
        if not archive.is_file():
            raise FileNotFoundError(f"{archive}: no such file, and not an http(s):// URL.\n"
                                    f"{where_to_get_helen(dest)}")

    digest = sha256_file(archive)
    if expected is not None and digest != expected:
        if downloaded:
            archive.unlink(missing_ok=True)
        raise ChecksumError(
            f"{source}: sha256 mismatch: expected {expected}, got {digest}. "
            + ("The download was deleted; check the URL and the --sha256 value, then try again."
               if downloaded else "Check that this is the right file and the --sha256 value."))
    if expected is None:
        print(f"sha256 {digest}  {archive.name} (pass --sha256 {digest} to pin it)",
              file=sys.stderr)

    _install(archive, dest, force)
    if downloaded:
        archive.unlink(missing_ok=True)
    return dest


# --------------------------------------------------------------------------------------------
# Command line: python -m portraitseg.data download helen ...


def add_download_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``download`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "download", help="download (or unpack a local) dataset archive, verified and safely",
        description="Stream a dataset archive (resumable), verify its sha256 and extract it "
                    "safely into --dest. --url also accepts a local archive path.")
    p.add_argument("dataset", choices=sorted(DATASETS), help="dataset to install")
    p.add_argument("--url", help="archive URL (http/https/file) or local path "
                                 f"(default for helen: {SMITH_URL})")
    p.add_argument("--sha256", help="expected sha256 of the archive (64 hex digits)")
    p.add_argument("--dest", type=Path, help="dataset folder (default: data/<dataset>)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --dest")
    p.add_argument("--timeout", type=float_in(0.1, 3600.0), default=10.0,
                   help="network timeout in seconds (%(default)s)")
    p.set_defaults(func=run_download)
    return p


def run_download(args: argparse.Namespace) -> int:
    """Run ``download`` from parsed arguments; returns the process exit code."""
    spec = DATASETS[args.dataset]
    dest = args.dest if args.dest is not None else spec["dest"]
    if args.url is not None and not args.url.strip():
        print(f"error: --url is empty; give an archive URL or local path (default for {args.dataset}: "
              f"{spec['url']})", file=sys.stderr)
        return 2
    try:
        download(args.url or spec["url"], dest, sha256=args.sha256 or spec["sha256"],
                 force=args.force, timeout=args.timeout)
    except (DestinationError, FileExistsError, FileNotFoundError, ValueError) as err:  # usage
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DownloadError as err:  # network, checksum, extraction
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. --dest on a read-only or missing file system
        print(f"error: --dest {dest}: cannot be written ({err.strerror or err})", file=sys.stderr)
        return 2
    try:
        from portraitseg.data.layouts import detect_layout

        found = f"{detect_layout(dest)} layout"
    except (ImportError, FileNotFoundError) as err:
        found = f"no known layout detected: {err}"
    print(f"{dest}: ready ({found}). Train with `python train.py data=helen data.root={dest}`")
    return 0
