"""No command destroys a file it was given: outputs that are inputs are refused (exit 2, bytes
unchanged), concurrent renders never share an output name, ``download --force`` keeps its archive."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from portraitseg.cli.main import main as cli_main
from portraitseg.cli.outputs import OutputNamer
from portraitseg.models import checkpoint


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """Stands in for a training checkpoint: the refusal comes before the file is read."""
    path = tmp_path / "last.ckpt"
    path.write_bytes(os.urandom(4096))
    return path


def aliases(ckpt: Path) -> dict[str, Path]:
    """The checkpoint itself, by another spelling, through a symlink and a hard link."""
    link = ckpt.with_name("link.ckpt")
    link.symlink_to(ckpt.name)
    hard = ckpt.with_name("hard.ckpt")
    os.link(ckpt, hard)
    return {"same": ckpt, "dotted": ckpt.parent / "." / ".." / ckpt.parent.name / ckpt.name,
            "symlink": link, "hardlink": hard}


@pytest.mark.parametrize("alias", ["same", "dotted", "symlink", "hardlink"])
def test_weights_export_refuses_to_overwrite_its_checkpoint(ckpt, alias, capsys):
    before = digest(ckpt)
    out = aliases(ckpt)[alias]
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is the same file as --ckpt {ckpt}" in err and "choose another --out" in err
    assert digest(ckpt) == before


def test_weights_export_refuses_a_card_over_an_input(ckpt, tmp_path, capsys):
    before = digest(ckpt)
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "m.pt"), "--card", str(ckpt)]) == 2
    assert "--card" in capsys.readouterr().err
    assert digest(ckpt) == before and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_onnx_export_refuses_to_overwrite_its_checkpoint(ckpt, alias, capsys):
    before = digest(ckpt)
    out = aliases(ckpt)[alias]
    assert cli_main(["export", "--ckpt", str(ckpt), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert "portraitseg export: error: --onnx" in err and "same file as --ckpt" in err
    assert "Traceback" not in err
    assert digest(ckpt) == before


# ------------------------------------------------------------------------------ render names


def test_two_runs_never_choose_the_same_output(tmp_path):
    """Two runs (two namers, as two processes would have) naming outputs in one folder at once."""
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"input")
    out = tmp_path / "out"
    out.mkdir()
    first, second = OutputNamer([src], overwrite=False), OutputNamer([src], overwrite=False)
    a, fig_a = first(src, out, stages=True)
    b, fig_b = second(src, out, stages=True)  # chosen before the first run wrote anything
    assert a.name == "photo_portrait.jpg" and b.name == "photo_portrait_1.jpg"
    assert fig_a.name == "photo_stages.jpg" and fig_b.name == "photo_stages_1.jpg"
    a.write_bytes(b"first run")  # the render replaces its placeholder
    b.write_bytes(b"second run")
    first.written(a, fig_a)
    second.written(b, fig_b)
    assert a.read_bytes() == b"first run" and b.read_bytes() == b"second run"


def _claim_many(folder: str, start, out, finish) -> None:
    """One process's run: wait for the start signal, then name 25 portraits of the same photo;
    it lives (holding its placeholders, as a run rendering them would) until ``finish``."""
    src = Path(folder) / "photo.jpg"
    namer = OutputNamer([src], overwrite=False)
    start.wait()
    out.put([namer(src, Path(folder), stages=False)[0].name for _ in range(25)])
    finish.wait(timeout=60)


def test_concurrent_processes_get_distinct_names(tmp_path):
    """Real processes racing for the same names in one folder: every name is given out once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    (tmp_path / "photo.jpg").write_bytes(b"input")
    start, out, finish = ctx.Event(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_claim_many, args=(str(tmp_path), start, out, finish)) for _ in range(3)]
    for proc in procs:
        proc.start()
    start.set()
    names = [name for _ in procs for name in out.get(timeout=60)]
    finish.set()
    for proc in procs:
        proc.join(timeout=60)
    assert len(names) == 75 and len(set(names)) == 75, sorted(names)


def test_a_concurrent_runs_file_is_never_replaced(tmp_path):
    """A file another run wrote after this run started (same name) is skipped, bytes unchanged."""
    src = tmp_path / "photo.png"
    src.write_bytes(b"input")
    namer = OutputNamer([src], overwrite=False)
    theirs = tmp_path / "photo_portrait.png"
    theirs.write_bytes(b"the other run's portrait")
    mine, _ = namer(src, tmp_path, stages=False)
    assert mine.name == "photo_portrait_1.png"
    assert theirs.read_bytes() == b"the other run's portrait"


def test_unwritten_placeholders_are_removed(tmp_path):
    src = tmp_path / "photo.png"
    src.write_bytes(b"input")
    namer = OutputNamer([src], overwrite=False)
    portrait, figure = namer(src, tmp_path, stages=True)
    assert portrait.exists() and portrait.stat().st_size == 0  # reserved on disk
    namer.release()  # the render failed
    assert not portrait.exists() and not figure.exists()


def test_an_empty_input_is_not_taken_for_a_killed_runs_placeholder(tmp_path):
    """An empty input file that also has an output's name (a hard link or symlink) is the input,
    not the debris of a killed run: the name is not reused."""
    src = tmp_path / "photo.png"
    src.write_bytes(b"")
    os.link(src, tmp_path / "photo_portrait.png")
    (tmp_path / "photo_stages.jpg").symlink_to(src.name)
    namer = OutputNamer([src], overwrite=True)
    portrait, figure = namer(src, tmp_path, stages=True)
    assert (portrait.name, figure.name) == ("photo_portrait_1.png", "photo_stages_1.jpg")


def test_failed_render_leaves_no_placeholder(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    code = cli_main(["render", str(bad), "-o", str(out), "--subject", "face", "--render", "halo_free"])
    assert code in (1, 2)  # 2 when this checkout has no bundled model
    assert not list(out.glob("*_portrait*")) if out.exists() else True
    assert bad.read_bytes() == b"not an image"


# ------------------------------------------------------------------------------ a photo that fails


def _photos(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def _render(model: Path, out: Path, *inputs: Path) -> int:
    return cli_main(["render", *map(str, inputs), "--ckpt", str(model), "-o", str(out), "--stages",
                     "--save-alpha", "--subject", "face", "--render", "gaussian", "--device", "cpu"])


def _listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_full_disk_mid_photo_keeps_no_part_of_it(tmp_path, tiny_weights, monkeypatch, capsys):
    """The disk fills up while the stages figure is written: the photo fails (one error line naming
    the file), and neither its portrait nor its matte stays without the figure; no placeholder."""
    import portraitseg.io.write as pio_write

    real = pio_write._write_all

    def full_on_figures(fd: int, data) -> None:
        if bytes(memoryview(data)[:3]) == b"\xff\xd8\xff":  # the JPEG stages figure
            raise OSError(28, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(pio_write, "_write_all", full_on_figures)
    (photo,) = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _render(tiny_weights, out, photo) == 1
    err = capsys.readouterr().err
    assert "p0_stages.jpg: could not be written (the disk is full" in err and "Traceback" not in err
    assert _listing(out) == []


def _fail_reading(monkeypatch: pytest.MonkeyPatch, name: str, error: type[BaseException]) -> None:
    """Decoding the photo file ``name`` raises ``error``; other photos decode normally."""
    import portraitseg.io.read as pio_read

    real = pio_read._open

    def fail(path, max_pixels):
        if Path(path).name == name:
            raise error
        return real(path, max_pixels)

    monkeypatch.setattr(pio_read, "_open", fail)


def test_out_of_memory_photo_leaves_no_placeholder(tmp_path, tiny_weights, monkeypatch, capsys):
    """A photo that runs out of memory (a decompression bomb let through by a raised --max-pixels)
    fails alone: no 0-byte file under its names, the next photo is rendered."""
    _fail_reading(monkeypatch, "p0.png", MemoryError)
    first, second = _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _render(tiny_weights, out, first, second) == 1
    assert "out of memory" in capsys.readouterr().err
    assert _listing(out) == ["p1_alpha.png", "p1_portrait.png", "p1_stages.jpg"]
    assert all((out / name).stat().st_size > 0 for name in _listing(out))


def test_interrupted_run_leaves_only_complete_photos(tmp_path, tiny_weights, monkeypatch, capsys):
    _fail_reading(monkeypatch, "p1.png", KeyboardInterrupt)  # Ctrl-C while the 2nd photo is read
    out = tmp_path / "out"
    assert _render(tiny_weights, out, *_photos(tmp_path / "in", 3)) == 130
    assert _listing(out) == ["p0_alpha.png", "p0_portrait.png", "p0_stages.jpg"]


def test_sigterm_is_an_interrupt(tmp_path, tiny_weights, monkeypatch, capsys):
    """``kill`` (SIGTERM) unwinds like Ctrl-C: no photo leaves a part of its outputs (a 0-byte
    placeholder, a temporary file, a portrait without its figure), and the previous SIGTERM
    handler is back afterwards. (The signal arrives while the first photo is rendered: the second
    is decoded ahead, so whether the first is kept is not fixed; that it is whole or absent is.)"""
    import signal

    import portraitseg.io.read as pio_read

    real = pio_read._open

    def terminated_while_reading(path, max_pixels):
        if Path(path).name == "p1.png":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, max_pixels)

    monkeypatch.setattr(pio_read, "_open", terminated_while_reading)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert _render(tiny_weights, out, *_photos(tmp_path / "in", 3)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _listing(out) in ([], ["p0_alpha.png", "p0_portrait.png", "p0_stages.jpg"])
    assert all((out / name).stat().st_size > 0 for name in _listing(out))
    assert signal.getsignal(signal.SIGTERM) is before


def test_rerun_after_a_killed_run_reuses_its_empty_names(tmp_path, tiny_weights, capsys):
    """A killed run (SIGKILL: no cleanup) left its empty placeholders and a temporary file; nobody
    holds them, so the re-run writes the plain names, not ``_1``, and removes the temporary file.
    A live run's placeholder is never taken."""
    (photo,) = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("p0_portrait.png", "p0_stages.jpg", "p0_alpha.png"):
        (out / name).touch()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".p0_portrait.png.0123abcd.{dead.pid}.tmp").write_bytes(b"half a portrait")  # killed writer
    (out / f".notes.{dead.pid}.tmp").write_bytes(b"a user's file")  # not of the writer's naming
    assert _render(tiny_weights, out, photo) == 0
    assert _listing(out) == [f".notes.{dead.pid}.tmp", "p0_alpha.png", "p0_portrait.png", "p0_stages.jpg"]
    assert all((out / name).stat().st_size > 0 for name in _listing(out))

    live = tmp_path / "live"
    live.mkdir()
    other = OutputNamer([photo], overwrite=False)  # another run holding its placeholders
    held, _ = other(photo, live, stages=True)
    assert _render(tiny_weights, live, photo) == 0
    assert held.stat().st_size == 0 and (live / "p0_portrait_1.png").stat().st_size > 0
    other.release()
    assert not held.exists()


# ------------------------------------------------------------------------------ ONNX runner


def _jpeg(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("alias", ["same", "dotted", "symlink", "hardlink"])
def test_onnx_runner_never_writes_over_its_input(tmp_path, alias, capsys):
    from portraitseg.onnx_infer import main as onnx_main

    photo = _jpeg(tmp_path / "photo.jpg")
    before = digest(photo)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the output is checked first")
    assert onnx_main([str(model), str(photo), str(aliases(photo)[alias])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "same file as INPUT_IMAGE" in err and "Traceback" not in err
    assert digest(photo) == before


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (b"", "empty file"), (b"GIF89a not really", "not an image"),
    ("truncated", "corrupt or truncated"), ("bomb", "exceeds the limit"), ("folder", "no such file"),
])
def test_onnx_runner_bad_input_is_one_error_line(tmp_path, capsys, content, message):
    """The runner reads through portraitseg.io (named errors, the pixel limit), not OpenCV's
    tracebacks: one ``error:`` line naming the file, exit 2, nothing written."""
    import struct
    import zlib

    from portraitseg.onnx_infer import main as onnx_main

    src = tmp_path / "in.png"
    if content == "truncated":
        src.write_bytes(_jpeg(tmp_path / "whole.png").read_bytes()[:300])
    elif content == "bomb":  # a tiny PNG whose header claims 60000 x 60000 pixels
        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

        ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
        src.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                        + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    elif content == "folder":
        src.mkdir()
    elif content is not None:
        src.write_bytes(content)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the photo is read first")
    out = tmp_path / "out.png"
    assert onnx_main([str(model), str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src}") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------ download


def test_download_force_never_deletes_its_archive_inside_dest(tmp_path, capsys):
    from portraitseg.data.__main__ import main as data_main

    dest = tmp_path / "helen"
    dest.mkdir()
    archive = dest / "helen.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a.png", b"x")
    (dest / "notes.txt").write_text("mine")
    before = digest(archive)
    for extra in ([], ["--force"]):
        code = data_main(["download", "helen", "--url", str(archive), "--dest", str(dest), *extra])
        assert code == 2
        err = capsys.readouterr().err
        assert f"--url {archive} lies inside --dest {dest}" in err and "move the archive out" in err
        assert digest(archive) == before and (dest / "notes.txt").read_text() == "mine"
    file_url = archive.as_uri()  # the same archive as a file:// URL
    assert data_main(["download", "helen", "--url", file_url, "--dest", str(dest), "--force"]) == 2
    assert digest(archive) == before
