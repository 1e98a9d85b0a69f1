"""The one output writer (:func:`portraitseg.io.atomic_write_all`): a write is complete and
verified under its final name or absent, an existing file is untouched by a failed write, and
folders, device nodes and FIFOs are never written through; every command that writes a file
reaches it (render, ONNX runner, ``export --onnx``, the weights export)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import portraitseg.io as pio
import portraitseg.io.write as pio_write
from portraitseg.cli.main import main as cli_main
from portraitseg.io import (
    OutputError,
    WriteError,
    atomic_write,
    atomic_write_all,
    check_image,
    read_image,
    write_image,
    write_torch,
)
from portraitseg.models import checkpoint
from portraitseg.onnx_infer import main as onnx_main


def noise(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Incompressible pixels: JPEG and PNG files of them are large."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def debris(folder: Path) -> list[str]:
    """Our temporary files left in ``folder`` (there must be none after any write)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------ the writer


def test_writes_verified_bytes_with_the_users_permissions(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", b"x" * 1000)
    assert path.read_bytes() == b"x" * 1000
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert debris(path.parent) == []


@pytest.mark.parametrize("fmt", [".jpg", ".png", ".webp", ".tif", ".bmp"])
def test_write_image_roundtrip(tmp_path, fmt):
    rgb = noise(40, 56)
    out = write_image(tmp_path / f"a{fmt}", rgb, quality=100)
    back = read_image(out)
    assert back.shape == rgb.shape
    if fmt in (".png", ".tif", ".bmp"):
        np.testing.assert_array_equal(back, rgb)
    assert debris(tmp_path) == []


def _short_writes(monkeypatch, after: int = 0):
    """Every os.write of the writer past the first ``after`` calls writes half its bytes and then
    fails with ENOSPC: a disk that fills up mid-file."""
    calls = []
    real = os.write

    def write(fd: int, data) -> int:
        calls.append(fd)
        if len(calls) <= after:
            return real(fd, data)
        if len(data) > 1:
            return real(fd, bytes(memoryview(data)[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pio_write.os, "write", write)


@pytest.mark.parametrize("existing", [False, True])
def test_full_disk_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch, existing):
    out = tmp_path / "portrait.jpg"
    if existing:
        out.write_bytes(b"the previous portrait")
    _short_writes(monkeypatch)
    with pytest.raises(WriteError, match=r"portrait\.jpg: could not be written \(the disk is full"):
        write_image(out, noise())
    assert (out.read_bytes() == b"the previous portrait") if existing else not out.exists()
    assert debris(tmp_path) == []


def test_a_write_that_does_not_verify_is_refused(tmp_path):
    out = tmp_path / "portrait.png"
    bad = pio.encode_image(out, noise())[:-100]  # a truncated PNG: its size is right, its CRCs not
    with pytest.raises(WriteError, match="does not verify"):
        atomic_write(out, bad, check=check_image)
    assert not out.exists() and debris(tmp_path) == []


_FSIZE_LIMIT = """
import resource, signal, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {src!r})
from portraitseg.io import WriteError, write_image
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then cuts writes short (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
rgb = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
Image.fromarray(rgb).save({plain!r})  # Pillow alone: returns normally, the JPEG is truncated
try:
    write_image({ours!r}, rgb)
except WriteError as err:
    print(err)
    sys.exit(3)
"""


def test_file_size_limit_is_a_named_error_not_a_truncated_jpeg(tmp_path):
    """A real short write (RLIMIT_FSIZE): Pillow's own save returns normally with a truncated
    JPEG (the control), the project's writer raises and leaves nothing."""
    plain, ours = tmp_path / "plain.jpg", tmp_path / "ours.jpg"
    script = _FSIZE_LIMIT.format(src=str(Path(pio.__file__).parents[2]), plain=str(plain), ours=str(ours))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "could not be written (the disk is full or the file size limit was reached" in proc.stdout
    assert plain.stat().st_size == 20_000  # the control: cut at the limit, yet Pillow said nothing
    assert not ours.exists() and debris(tmp_path) == []


_RENDER_FSIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
from portraitseg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_render_cli_on_a_full_disk_fails_the_photo(tmp_path, tiny_weights):
    """The reported case end to end: ``render x.jpg -o DIR`` with too little room for the portrait
    said "rendered 1 of 1" and left a truncated JPEG; now the photo fails with a named error
    (exit 1) and the folder holds nothing of it."""
    src = tmp_path / "x.jpg"
    Image.fromarray(noise(160, 200)).save(src, quality=95)  # its portrait is well over 20 kB
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _RENDER_FSIZE_LIMIT, "render", str(src), "-o", str(out),
                           "--ckpt", str(tiny_weights), "--device", "cpu", "--subject", "face"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "x_portrait.jpg: could not be written (the disk is full or the file size limit" in proc.stderr
    assert "rendered 0 of 1" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == []


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(pio_write, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "a.png", noise())
    assert list(tmp_path.iterdir()) == []


def test_group_is_all_or_nothing(tmp_path, monkeypatch):
    """A photo's portrait and its figure: if the second cannot be written, the first is not kept
    either (and an existing first file keeps its bytes)."""
    first, second = tmp_path / "a_portrait.png", tmp_path / "a_stages.jpg"
    _short_writes(monkeypatch, after=1)  # the first file's single write succeeds
    with pytest.raises(WriteError, match="a_stages.jpg"):
        atomic_write_all([(first, b"1" * 5000), (second, b"2" * 5000)])
    assert not first.exists() and not second.exists() and debris(tmp_path) == []
    first.write_bytes(b"older portrait")
    with pytest.raises(WriteError):
        atomic_write_all([(first, b"1" * 5000), (second, b"2" * 5000)])
    assert first.read_bytes() == b"older portrait"


def test_write_torch_is_complete_and_loads(tmp_path):
    import torch

    path = write_torch(tmp_path / "w.pt", {"x": torch.arange(5)})
    assert torch.load(path, weights_only=True)["x"].tolist() == [0, 1, 2, 3, 4]
    assert debris(tmp_path) == []


# ------------------------------------------------------------------------------ destinations


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def _device(tmp_path: Path) -> Path:
    """A character device node like /dev/null, made in ``tmp_path`` (so that a failing test can
    never replace the real one), or a skip where device nodes cannot be made (not root)."""
    path = tmp_path / "null.png"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("device nodes can only be made as root")
    return path


def _destinations(tmp_path: Path, kind: str) -> Path:
    if kind == "device":
        return _device(tmp_path)
    if kind == "fifo":
        return _fifo(tmp_path)
    path = tmp_path / f"{kind}.png"
    if kind == "folder":
        path.mkdir()
    elif kind == "broken_link":
        path.symlink_to(tmp_path / "nowhere.png")
    elif kind == "link_to_device":
        path.symlink_to("/dev/null")  # the link is in tmp_path: even a wrong replace only hits it
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "broken_link", "link_to_device"])
def test_refuses_what_is_not_a_regular_file(tmp_path, kind):
    dest = _destinations(tmp_path, kind)
    before = os.lstat(dest)
    with pytest.raises(OutputError, match=str(dest.name)):
        write_image(dest, noise(8, 8))
    with pytest.raises(OutputError):
        atomic_write(dest, b"bytes")
    after = os.lstat(dest)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_symlink_to_a_file_is_replaced_only_when_asked(tmp_path):
    target = tmp_path / "original.png"
    target.write_bytes(b"the user's file")
    link = tmp_path / "out.png"
    link.symlink_to(target.name)
    with pytest.raises(OutputError, match="already exists"):
        write_image(link, noise(8, 8), replace=False)
    write_image(link, noise(8, 8), replace=True)
    assert not link.is_symlink() and read_image(link).shape == (8, 8, 3)
    assert target.read_bytes() == b"the user's file"  # the link was replaced, not written through


# ------------------------------------------------------------------------------ every command


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(noise(32, 40)).save(path)
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_onnx_runner_refuses_special_outputs(tmp_path, photo, capsys, kind):
    dest = _destinations(tmp_path, kind)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the output is checked first")
    assert onnx_main([str(model), str(photo), str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "not a file" in err


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_onnx_export_refuses_special_outputs(tmp_path, capsys, kind):
    dest = _destinations(tmp_path, kind)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not read: the output is checked first")
    assert cli_main(["export", "--ckpt", str(ckpt), "--onnx", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "portraitseg export: error: " in err and "not a file" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_weights_export_refuses_special_outputs(tmp_path, capsys, kind):
    dest = _destinations(tmp_path, kind)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not read: the output is checked first")
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a file" in err and "Traceback" not in err


def test_model_card_refuses_a_fifo(tmp_path, capsys):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not read")
    card = _fifo(tmp_path)
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "m.pt"), "--card", str(card)]) == 2
    assert "not a file" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_writer_messages_are_one_line(tmp_path, monkeypatch):
    _short_writes(monkeypatch)
    with pytest.raises(WriteError) as info:
        atomic_write(tmp_path / "x.bin", b"y" * 100)
    assert "\n" not in str(info.value) and "x.bin" in str(info.value)
