"""Downloader: a local HTTP server (with Range support), resume, checksums, safe extraction."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from portraitseg.data import download as dl
from portraitseg.data.download import ChecksumError, DownloadError, UnsafeArchiveError, download

DATASET = {
    "helenstar/train.txt": b"train/images/a.jpg train/labels/a.png\n",
    "helenstar/train/images/a.jpg": b"\xff\xd8 not really a jpeg " * 4000,  # ~90 KB: worth resuming
    "helenstar/train/labels/a.png": b"label",
}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def make_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = (),
             extra_first: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(("gz", "tgz")) else "w") as tf:
        if extra_first:
            for info in extra:
                tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if not extra_first:
            for info in extra:
                tf.addfile(info)
    return path


def make_zip_symlink(path: Path, name: str, target: str) -> Path:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)  # S_IFLNK: the member's data is the link target
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, target)
    return path


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # simulate a dropped connection
            self.wfile.write(body[: srv.cut_after])
            srv.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.cut_after = {}, [], True, None
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_zip(tmp_path / "helen.zip", DATASET)


def assert_dataset(dest: Path) -> None:
    """The single top-level folder is stripped: the dataset lies directly in dest."""
    assert (dest / "train.txt").read_bytes() == DATASET["helenstar/train.txt"]
    assert (dest / "train/images/a.jpg").read_bytes() == DATASET["helenstar/train/images/a.jpg"]
    assert not (dest / ".download").exists()


# ---------------------------------------------------------------------------- HTTP


def test_downloads_verifies_and_extracts(server, archive, tmp_path, capsys):
    server.files["/files/helen.zip"] = archive.read_bytes()
    dest = tmp_path / "data" / "helen"
    assert download(f"{server.url}/files/helen.zip", dest, sha256=sha(archive).upper(),
                    timeout=5) == dest
    assert_dataset(dest)
    assert server.requests == [("/files/helen.zip", None)]


def test_prints_the_digest_when_none_is_given(server, archive, tmp_path, capsys):
    server.files["/helen.zip"] = archive.read_bytes()
    download(f"{server.url}/helen.zip", tmp_path / "d", timeout=5)
    assert f"--sha256 {sha(archive)}" in capsys.readouterr().err


def test_resumes_an_interrupted_download(server, tmp_path):
    big = make_tar(tmp_path / "helen.tar.gz", DATASET)
    data = big.read_bytes()
    server.files["/helen.tar.gz"] = data
    server.cut_after = len(data) // 2
    dest = tmp_path / "helen"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(f"{server.url}/helen.tar.gz", dest, sha256=sha(big), timeout=5)
    part = dest / ".download" / "helen.tar.gz.part"
    assert part.stat().st_size == len(data) // 2
    download(f"{server.url}/helen.tar.gz", dest, sha256=sha(big), timeout=5)
    assert server.requests[-1] == ("/helen.tar.gz", f"bytes={len(data) // 2}-")
    assert_dataset(dest)


def test_restarts_when_the_server_ignores_range(server, archive, tmp_path):
    server.files["/helen.zip"] = archive.read_bytes()
    server.ranges = False
    part = tmp_path / "helen" / ".download" / "helen.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    download(f"{server.url}/helen.zip", tmp_path / "helen", sha256=sha(archive), timeout=5)
    assert_dataset(tmp_path / "helen")


def test_checksum_mismatch_deletes_the_download(server, archive, tmp_path):
    server.files["/helen.zip"] = archive.read_bytes()
    dest = tmp_path / "helen"
    with pytest.raises(ChecksumError, match=f"expected {'0' * 64}, got {sha(archive)}"):
        download(f"{server.url}/helen.zip", dest, sha256="0" * 64, timeout=5)
    assert not dest.exists()


def test_http_error_names_the_status(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.url}/missing.zip", tmp_path / "helen", timeout=5)
    assert not (tmp_path / "helen").exists()


def test_unreachable_server_fails_fast_with_instructions(tmp_path):
    with socket.socket() as s:  # a localhost port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/helen.zip", tmp_path / "helen", timeout=5)
    assert time.perf_counter() - t0 < 5
    message = str(info.value)
    assert f"cannot reach http://127.0.0.1:{port}/helen.zip" in message
    dest = tmp_path / "helen"
    for hint in ("SmithCVPR2013_dataset_resized", dl.SMITH_URL, "train.txt", "images/ + masks/",
                 f"--dest {dest}", f"python train.py data=helen data.root={dest}"):
        assert hint in message
    assert not (tmp_path / "helen").exists()


# ---------------------------------------------------------------------------- destination


def test_never_overwrites_a_dataset_without_force(server, archive, tmp_path):
    server.files["/helen.zip"] = archive.read_bytes()
    dest = tmp_path / "helen"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--force"):
        download(f"{server.url}/helen.zip", dest, timeout=5)
    assert server.requests == [] and (dest / "mine.txt").exists()
    download(f"{server.url}/helen.zip", dest, force=True, timeout=5)
    assert not (dest / "mine.txt").exists()
    assert_dataset(dest)


def test_a_failed_extraction_keeps_the_old_dataset(tmp_path):
    bad = make_zip(tmp_path / "bad.zip", {"../evil.txt": b"x"})
    dest = tmp_path / "helen"
    dest.mkdir()
    (dest / "train.txt").write_text("old")
    with pytest.raises(UnsafeArchiveError):
        download(bad, dest, force=True)
    assert (dest / "train.txt").read_text() == "old"
    assert sorted(p.name for p in dest.iterdir()) == ["train.txt"]


# ---------------------------------------------------------------------------- local archives


@pytest.mark.parametrize("name", ["helen.zip", "helen.tar", "helen.tar.gz", "helen.tgz"])
def test_local_archive(tmp_path, name):
    local = (make_zip if name.endswith("zip") else make_tar)(tmp_path / name, DATASET)
    download(local, tmp_path / "helen", sha256=sha(local))
    assert_dataset(tmp_path / "helen")
    assert local.exists(), "a user's own archive is never deleted"


def test_local_archive_checksum_mismatch_keeps_the_file(archive, tmp_path):
    with pytest.raises(ChecksumError, match="right file"):
        download(archive, tmp_path / "helen", sha256="f" * 64)
    assert archive.exists() and not (tmp_path / "helen").exists()


def test_file_url_and_missing_path(archive, tmp_path):
    download(archive.as_uri(), tmp_path / "helen")
    assert_dataset(tmp_path / "helen")
    with pytest.raises(FileNotFoundError, match="(?s)no such file.*SmithCVPR2013"):
        download(tmp_path / "nope.zip", tmp_path / "other")


def test_not_an_archive(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        download(plain, tmp_path / "helen")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download(plain, tmp_path / "helen", sha256="abc")


def test_links_inside_the_destination_are_kept(tmp_path):
    local = make_tar(tmp_path / "ok.tar", {"d/real.txt": b"real"},
                     [link("d/sym.txt", "real.txt"), link("d/hard.txt", "d/real.txt", hard=True)])
    download(local, tmp_path / "out")
    assert (tmp_path / "out/sym.txt").is_symlink() and (tmp_path / "out/sym.txt").read_bytes() == b"real"
    assert (tmp_path / "out/hard.txt").read_bytes() == b"real"


def _device() -> tarfile.TarInfo:
    info = tarfile.TarInfo("dev/null")
    info.type = tarfile.CHRTYPE
    return info


MALICIOUS = {
    "zip traversal": lambda p: make_zip(p / "a.zip", {"ok.txt": b"", "../evil.txt": b"x"}),
    "zip absolute": lambda p: make_zip(p / "a.zip", {"/tmp/evil.txt": b"x"}),
    "zip backslash traversal": lambda p: make_zip(p / "a.zip", {"a\\..\\..\\evil.txt": b"x"}),
    "tar traversal": lambda p: make_tar(p / "a.tar", {"a/../../evil.txt": b"x"}),
    "tar absolute": lambda p: make_tar(p / "a.tar.gz", {"/tmp/evil.txt": b"x"}),
    "tar symlink escaping": lambda p: make_tar(p / "a.tar", {}, [link("d/out", "../../outside")]),
    "tar symlink absolute": lambda p: make_tar(p / "a.tar", {}, [link("passwd", "/etc/passwd")]),
    "tar hardlink escaping": lambda p: make_tar(p / "a.tar", {}, [link("h", "../outside", hard=True)]),
    "zip symlink escaping": lambda p: make_zip_symlink(p / "a.zip", "d/out", "../../outside"),
    "tar write through symlink": lambda p: make_tar(
        p / "a.tar", {"sub/ok.txt": b"", "up/evil.txt": b"x"}, [link("up", "sub")], extra_first=True),
    "tar symlink via symlink": lambda p: make_tar(
        p / "a.tar", {}, [link("a/b/top", "../.."), link("a/b/out", "top/../x")]),
    "tar device": lambda p: make_tar(p / "a.tar", {}, [_device()]),
}


@pytest.mark.parametrize("attack", list(MALICIOUS))
def test_malicious_archives_are_refused(tmp_path, attack):
    src = tmp_path / "src"
    src.mkdir()
    archive = MALICIOUS[attack](src)
    box = tmp_path / "box"
    dest = box / "dest"
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        download(archive, dest)
    assert not dest.exists(), "nothing is left behind"
    assert not list(box.rglob("*")) and not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m portraitseg.data")
    dl.add_download_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_command_line(archive, tmp_path, capsys):
    dest = tmp_path / "helen"
    args = _parser().parse_args(["download", "helen", "--url", str(archive), "--dest", str(dest),
                                 "--sha256", sha(archive)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "helenstar layout" in out and f"data.root={dest}" in out
    assert args.func(args) == 2  # second time: dest exists (a usage error)
    assert "--force" in capsys.readouterr().err
    args = _parser().parse_args(["download", "helen", "--url", str(archive), "--dest", str(dest), "--force"])
    assert args.func(args) == 0
    with pytest.raises(SystemExit):
        _parser().parse_args(["download", "celeba"])


def test_command_line_offline(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _parser().parse_args(["download", "helen", "--url", f"http://127.0.0.1:{port}/x.zip",
                                 "--dest", str(tmp_path / "helen"), "--timeout", "3"])
    assert args.func(args) == 1
    assert "python train.py data=helen" in capsys.readouterr().err
