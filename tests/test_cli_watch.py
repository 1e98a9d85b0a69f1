"""``portraitseg render FOLDER --watch``: photos written slowly, a broken file, Ctrl-C (in a
subprocess, with the bundled model on 96x128 photos)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

INTERVAL = 0.4


def photo_bytes(seed: int, fmt: str = "PNG") -> bytes:
    """A 128x96 photo: a grey backdrop and a skin-coloured block, encoded."""
    rng = np.random.default_rng(seed)
    pixels = (rng.uniform(90, 140, (96, 128, 3))).astype(np.uint8)
    pixels[20:90, 40:90] = (200, 160, 130)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    """Wait until ``path`` exists (failing early if the watch ended)."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the watch ended early: {proc.communicate()}"
        assert time.monotonic() < end, f"{path.name} did not appear in {timeout:.0f} s"
        time.sleep(0.1)


def test_watch_renders_each_complete_photo_once_and_ends_on_ctrl_c(tmp_path: Path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    (inbox / "a.png").write_bytes(photo_bytes(0))  # there before: rendered first
    (inbox / "b.png").write_bytes(photo_bytes(1))  # there before, already rendered: left alone
    (out / "b_portrait.png").write_bytes(b"earlier output")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "portraitseg.cli.main", "render", str(inbox), "-o", str(out), "--watch",
           "--interval", str(INTERVAL), "--threads", "1"]
    # Ctrl-C as a terminal sends it: SIGINT at its default (a shell without job control starts the
    # background jobs it runs, and so this test run, with SIGINT ignored, and children inherit that)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(out / "a_portrait.png", proc)
        # a photo written in chunks, slower than one chunk per interval would allow: never taken half-written
        data = photo_bytes(2)
        with open(inbox / "c.png", "wb") as f:
            for start in range(0, len(data), len(data) // 8 + 1):
                f.write(data[start:start + len(data) // 8 + 1])
                f.flush()
                time.sleep(INTERVAL / 3)
        (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 50)
        staged = tmp_path / "d.jpg"
        staged.write_bytes(photo_bytes(3, "JPEG"))
        staged.rename(inbox / "d.jpg")
        wait_for(out / "c_portrait.png", proc)
        wait_for(out / "d_portrait.jpg", proc)
        time.sleep(3 * INTERVAL)  # a few more looks: nothing is rendered twice
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never left running
            raise
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped watching" in stderr and "rendered 3 photo(s)" in stderr, stderr
    assert "1 failed" in stderr and "1 already rendered" in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0], stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_portrait.png", "b_portrait.png", "c_portrait.png", "d_portrait.jpg"], names
    assert (out / "b_portrait.png").read_bytes() == b"earlier output"
    for name in ("a_portrait.png", "c_portrait.png", "d_portrait.jpg"):
        with Image.open(out / name) as image:
            image.load()  # decodes to the end: complete
            assert image.size == (128, 96)
    assert stdout.count(" -> ") == 3


def test_watch_takes_one_folder(tmp_path: Path):
    photo = tmp_path / "a.png"
    photo.write_bytes(photo_bytes(0))
    proc = subprocess.run([sys.executable, "-m", "portraitseg.cli.main", "render", str(photo), "--watch"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--watch takes one folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["0", "x"])
def test_watch_interval_is_checked(tmp_path: Path, value: str):
    proc = subprocess.run([sys.executable, "-m", "portraitseg.cli.main", "render", str(tmp_path), "--watch",
                           "--interval", value], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--interval" in proc.stderr
