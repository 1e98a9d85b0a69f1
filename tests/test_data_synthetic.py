"""Synthetic portraits: content, layers, determinism, caching, and never touching others' files."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from portraitseg.classes import NUM_CLASSES
from portraitseg.data import synthetic
from portraitseg.data.synthetic import (
    SyntheticSample,
    ensure_synthetic,
    generate,
    make_sample,
    read_layers,
    read_manifest,
    verify,
)
from portraitseg.io import read_image, read_label


@pytest.fixture(scope="module")
def samples() -> list[SyntheticSample]:
    return [make_sample(i, seed=0, size=128) for i in range(12)]


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- content


def test_sample_shapes_and_types(samples):
    s = samples[0]
    assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
    assert s.label.shape == (128, 128) and s.label.dtype == np.uint8
    assert s.background.shape == (128, 128, 3) and s.background.dtype == np.uint8
    assert s.foreground.shape == (128, 128, 4) and s.foreground.dtype == np.uint8
    assert s.alpha.dtype == np.float32 and 0 <= s.alpha.min() and s.alpha.max() <= 1
    rect = make_sample(3, size=(96, 160))
    assert rect.image.shape == (96, 160, 3) and rect.label.shape == (96, 160)


@pytest.mark.parametrize("size", [16, (64, 5000), "big"])
def test_bad_size_is_rejected(size):
    with pytest.raises(ValueError, match="size"):
        make_sample(0, size=size)


def test_image_is_the_composite_of_its_layers(samples):
    for s in samples:
        alpha = s.foreground[..., 3:].astype(np.float64) / 255
        composite = s.foreground[..., :3] * alpha + s.background * (1 - alpha)
        assert np.abs(s.image - composite).max() <= 0.5  # uint8 rounding only
        assert not s.foreground[..., :3][s.foreground[..., 3] == 0].any()


def test_labels_are_helen_classes_consistent_with_the_picture(samples):
    counts = np.zeros(NUM_CLASSES, int)
    for s in samples:
        assert s.label.max() < NUM_CLASSES
        counts += np.bincount(s.label.ravel(), minlength=NUM_CLASSES) > 0
        # a labelled face part is where the person covers at least half the pixel
        assert s.alpha[s.label > 0].min() >= 0.5
        # the viewer's left eye / brow lies left of the right one
        for left, right in ((4, 5), (2, 3)):
            xl, xr = np.nonzero(s.label == left)[1], np.nonzero(s.label == right)[1]
            if len(xl) and len(xr):
                assert xl.mean() < xr.mean()
        # brows, eyes, nose and mouth sit inside the face: no background within 2 px of them
        near = np.pad(np.isin(s.label, range(2, 10)), 2)
        near = np.logical_or.reduce([np.roll(near, (dy, dx), (0, 1))
                                     for dy in range(-2, 3) for dx in range(-2, 3)])[2:-2, 2:-2]
        assert (s.label[near] != 0).all()
    assert (counts[[1, 4, 5, 6, 7, 9]] == len(samples)).all()  # skin, eyes, nose, lips: always
    assert counts[10] >= len(samples) // 2 and counts[8] >= 1 and counts[2] >= len(samples) // 2


def test_foreground_holds_the_whole_person_but_body_is_labelled_background(samples):
    for s in samples:
        h = s.label.shape[0]
        body = (s.alpha == 1) & (s.label == 0)  # neck, shoulders, clothes
        assert body[h // 2:].mean() > 0.1, "the torso must be in the foreground layer"
        assert (s.alpha == 0).mean() > 0.2, "the background must show around the person"


def test_alpha_is_soft_at_the_hair(samples):
    with_hair = [s for s in samples if (s.label == 10).any()]
    assert with_hair
    for s in with_hair:
        fractional = (s.alpha > 0.02) & (s.alpha < 0.98)
        hair_zone = np.zeros_like(fractional)
        ys, xs = np.nonzero(s.label == 10)
        hair_zone[max(ys.min() - 6, 0):ys.max() + 7, max(xs.min() - 6, 0):xs.max() + 7] = True
        assert (fractional & hair_zone).sum() > 30


def test_backgrounds_are_textured(samples):
    for s in samples:
        gray = s.background.astype(np.float32).mean(-1)
        detail = np.abs(np.diff(gray, axis=1)).mean() + np.abs(np.diff(gray, axis=0)).mean()
        assert detail > 2.0, "backgrounds need fine detail so that blur is visible"


def test_samples_are_deterministic_and_independent_of_each_other():
    a, b = make_sample(5, seed=3, size=64), make_sample(5, seed=3, size=64)
    for field in ("image", "label", "background", "foreground"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, make_sample(5, seed=4, size=64).image)
    assert not np.array_equal(a.image, make_sample(6, seed=3, size=64).image)


# ---------------------------------------------------------------------------- on disk


def test_generate_writes_the_helenstar_layout_with_layers(tmp_path):
    root = generate(tmp_path / "synth", n=5, seed=0, size=64)
    train = (root / "train.txt").read_text().splitlines()
    test = (root / "test.txt").read_text().splitlines()
    assert len(train) == 4 and len(test) == 1
    assert train[0] == "train/images/synth_0000.png train/labels/synth_0000.png"
    assert test[0] == "test/images/synth_0004.png test/labels/synth_0004.png"
    for line in train + test:
        image_rel, label_rel = line.split()
        image, label = read_image(root / image_rel), read_label(root / label_rel)
        sid = Path(image_rel).stem
        bg, fg = read_layers(root, sid)
        expected = make_sample(int(sid.split("_")[1]), seed=0, size=64)
        assert np.array_equal(image, expected.image) and np.array_equal(label, expected.label)
        assert np.array_equal(bg, expected.background) and np.array_equal(fg, expected.foreground)
    manifest = read_manifest(root)
    assert manifest["complete"] and manifest["params"]["size"] == [64, 64]
    assert manifest["splits"] == {"train": [f"synth_000{i}" for i in range(4)], "test": ["synth_0004"]}
    assert set(manifest["files"]) == set(_tree_hashes(root)) - {"manifest.json"}
    assert verify(root) == []


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _tree_hashes(generate(tmp_path / "a", n=3, seed=7, size=48))
    b = _tree_hashes(generate(tmp_path / "b", n=3, seed=7, size=48))
    c = _tree_hashes(generate(tmp_path / "c", n=3, seed=8, size=48))
    assert a == b
    assert a["train/images/synth_0000.png"] != c["train/images/synth_0000.png"]


def test_ensure_reuses_an_intact_dataset(tmp_path):
    root = ensure_synthetic(tmp_path / "s", n=3, seed=0, size=48)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert ensure_synthetic(root, n=3, seed=0, size=48) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamp


def test_ensure_repairs_damaged_files(tmp_path):
    root = ensure_synthetic(tmp_path / "s", n=3, seed=0, size=48)
    before = _tree_hashes(root)
    (root / "train/labels/synth_0001.png").write_bytes(b"oops")
    (root / "layers/foreground/synth_0000.png").unlink()
    assert len(verify(root)) == 2
    ensure_synthetic(root, n=3, seed=0, size=48)
    assert verify(root) == [] and _tree_hashes(root) == before


def test_other_parameters_need_force_and_replace_only_our_files(tmp_path):
    root = generate(tmp_path / "s", n=4, seed=0, size=48)
    (root / "NOTES.md").write_text("mine")
    (root / "train" / "images" / "my_photo.jpg").write_bytes(b"mine too")
    with pytest.raises(FileExistsError, match="force"):
        generate(root, n=2, seed=1, size=48)
    generate(root, n=2, seed=1, size=48, force=True)
    files = set(_tree_hashes(root))
    assert "train/images/synth_0002.png" not in files and "layers/background/synth_0003.png" not in files
    assert {"NOTES.md", "train/images/my_photo.jpg"} <= files
    assert verify(root) == []
    ensure_synthetic(root, n=3, seed=0, size=48)  # ensure replaces a stale dataset by itself
    assert read_manifest(root)["params"]["n"] == 3 and (root / "NOTES.md").exists()


def test_refuses_to_overwrite_files_it_did_not_write(tmp_path):
    root = tmp_path / "helen"
    root.mkdir()
    (root / "train.txt").write_text("train/images/a.jpg train/labels/a.png\n")
    for kwargs in ({}, {"force": True}):
        with pytest.raises(FileExistsError, match="did not write"):
            generate(root, n=2, size=48, **kwargs)
    assert (root / "train.txt").read_text().startswith("train/images/a.jpg")
    with pytest.raises(NotADirectoryError):
        generate(root / "train.txt", n=2, size=48)


def test_an_interrupted_run_is_completed(tmp_path, monkeypatch):
    root = tmp_path / "s"
    real = synthetic.make_sample

    def crash_on_second(index, *args, **kwargs):
        if index == 1:
            raise KeyboardInterrupt
        return real(index, *args, **kwargs)

    monkeypatch.setattr(synthetic.files, "make_sample", crash_on_second)  # what generate() calls
    with pytest.raises(KeyboardInterrupt):
        generate(root, n=3, size=48)
    assert read_manifest(root)["complete"] is False and verify(root)
    monkeypatch.setattr(synthetic.files, "make_sample", real)
    ensure_synthetic(root, n=3, size=48)  # our half-written files are not "someone else's"
    assert verify(root) == []


def test_bad_parameters(tmp_path):
    cases = (({"n": 0}, "n="), ({"seed": -1}, "seed"), ({"test_fraction": 1.0}, "test_fraction"))
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            generate(tmp_path / "x", size=48, **kwargs)
    assert not (tmp_path / "x").exists()


def test_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="python -m portraitseg.data")
    synthetic.add_synth_parser(parser.add_subparsers(dest="command", required=True))
    root = tmp_path / "cli"
    args = parser.parse_args(["synth", "--root", str(root), "--n", "3", "--seed", "2", "--size", "40x56"])
    assert args.func(args) == 0
    assert "2 train + 1 test" in capsys.readouterr().out
    assert read_manifest(root)["params"] == {"n": 3, "seed": 2, "size": [40, 56], "test_fraction": 0.2}
    args = parser.parse_args(["synth", "--root", str(root), "--n", "4", "--size", "40x56"])
    assert args.func(args) == 2 and "--force" in capsys.readouterr().err  # errors go to stderr
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--size", "tiny"])
    assert "expected an integer or HxW" in capsys.readouterr().err
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == synthetic.GENERATOR_VERSION
