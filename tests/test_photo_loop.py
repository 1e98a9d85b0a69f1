"""The folder loop of ``portraitseg render`` (cli/photos.py): several photos rendered at once on
the CPU give the same files as one at a time, reported in input order; a failing photo among
them is reported and skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitseg.cli.main import main as cli_main


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)
        paths.append(folder / f"p{i}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def _render(model: Path, out: Path, *extra: str) -> int:
    return cli_main(["render", *extra, "--ckpt", str(model), "-o", str(out), "--save-alpha",
                     "--subject", "face", "--render", "gaussian", "--device", "cpu"])


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr("portraitseg.runtime.usable_cores", lambda: 2)


def test_parallel_photos_match_one_at_a_time(tmp_path, tiny_weights, two_cores, capsys):
    photos = [str(p) for p in _photos(tmp_path / "in", 5)]
    assert _render(tiny_weights, tmp_path / "two", *photos) == 0  # 2 workers, 1 thread each
    two = capsys.readouterr().out
    assert _render(tiny_weights, tmp_path / "one", *photos, "--threads", "2") == 0  # 1 worker
    reported = [line.split(" -> ")[0] for line in two.splitlines() if " -> " in line]
    assert reported == photos  # input order
    for i in range(5):
        for kind in ("portrait", "alpha"):
            a = np.asarray(Image.open(tmp_path / "two" / f"p{i}_{kind}.png"))
            b = np.asarray(Image.open(tmp_path / "one" / f"p{i}_{kind}.png"))
            assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1, (i, kind)


def test_a_bad_photo_among_parallel_ones(tmp_path, tiny_weights, two_cores, capsys):
    photos = _photos(tmp_path / "in", 4)
    photos[1].write_bytes(b"not a png")
    assert _render(tiny_weights, tmp_path / "out", *map(str, photos)) == 1
    err = capsys.readouterr().err
    assert "p1.png" in err and err.count("error:") == 1
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"p{i}_{k}.png" for i in (0, 2, 3) for k in ("alpha", "portrait")]


def test_workers(tiny_weights, two_cores, tmp_path):
    """One photo, or an explicit --threads 2 on two cores: one at a time; else one per core."""
    import argparse

    from portraitseg.cli.photos import Job, PhotoLoop
    from portraitseg.pipeline import PortraitPipeline

    pipe = PortraitPipeline.from_pretrained(tiny_weights, "gaussian", "cpu", subject="face")
    job = Job(pipe, 10**6, 95)
    items = [(tmp_path / f"{i}.png", Path(".")) for i in range(3)]
    for threads, n, expected in ((None, 3, 2), (None, 1, 1), (2, 3, 1), (1, 3, 2)):
        loop = PhotoLoop(argparse.Namespace(threads=threads), items[:n], tmp_path)
        assert loop.workers(job) == expected, (threads, n)
        loop.close()
