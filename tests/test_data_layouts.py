"""Layout detection and discovery for the Smith, HELEN* and folder layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import face_label, write_pair
from portraitseg.data import DatasetNotFoundError, detect_layout, discover, load_sample
from portraitseg.data.layouts import SMITH_DIRNAME


def make_smith(root: Path, ids: dict[str, list[str]], size: int = 48) -> Path:
    base = root / SMITH_DIRNAME
    lists = {"train": "exemplars.txt", "val": "tuning.txt", "test": "testing.txt"}
    for split, names in ids.items():
        lines = []
        for k, image_id in enumerate(names, 1):
            rng = np.random.default_rng(k)
            label = face_label(size, size, rng)
            (base / "images").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "images" / f"{image_id}.jpg")
            (base / "labels" / image_id).mkdir(parents=True, exist_ok=True)
            for c in range(11):  # soft maps: 255 where the class is, a faint 10 elsewhere
                soft = np.where(label == c, 255, 10).astype(np.uint8)
                Image.fromarray(soft).save(base / "labels" / image_id / f"{image_id}_lbl{c:02d}.png")
            lines.append(f"{k} , {image_id}")
        (base / lists[split]).write_text("\n".join(lines) + "\n")
    return base


def test_smith_layout_merges_soft_maps_by_argmax(tmp_path):
    make_smith(tmp_path, {"train": ["100_1", "101_1"], "val": ["102_1"], "test": ["103_1"]})
    assert detect_layout(tmp_path) == "smith"
    splits = discover(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 1}
    image, label = load_sample(splits["train"][0])
    assert image.shape == (48, 48, 3) and label.shape == (48, 48)
    expected = face_label(48, 48, np.random.default_rng(1))
    np.testing.assert_array_equal(label, expected)


def test_smith_missing_label_map_is_named(tmp_path):
    base = make_smith(tmp_path, {"train": ["100_1"]})
    (base / "labels" / "100_1" / "100_1_lbl07.png").unlink()
    with pytest.raises(FileNotFoundError, match="100_1"):
        discover(tmp_path)


def test_helenstar_layout(tiny_helenstar):
    assert detect_layout(tiny_helenstar) == "helenstar"
    splits = discover(tiny_helenstar)
    assert len(splits["train"]) == 10 and len(splits["test"]) == 4
    assert splits["train"][0].label.name == "label_0.png"


def test_helenstar_missing_label_is_named(tiny_helenstar):
    (tiny_helenstar / "train/labels/label_3.png").unlink()
    with pytest.raises(FileNotFoundError, match="label_3.png"):
        discover(tiny_helenstar)


def test_folder_layout_matches_by_stem(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "images" / f"p{i}.jpg", tmp_path / "masks" / f"p{i}.png", 40, 30, i)
    assert detect_layout(tmp_path) == "folder"
    splits = discover(tmp_path)
    assert [s.id for s in splits["train"]] == ["p0", "p1", "p2"]


def test_folder_image_without_mask_is_named(tmp_path):
    write_pair(tmp_path / "images" / "a.jpg", tmp_path / "masks" / "a.png", 32, 32, 0)
    write_pair(tmp_path / "images" / "b.jpg", None, 32, 32, 1)
    with pytest.raises(FileNotFoundError, match=r"b\.jpg has no mask"):
        discover(tmp_path)


def test_explicit_layout_override(tmp_path):
    for split in ("train", "val"):
        write_pair(tmp_path / split / "images" / "x.png", tmp_path / split / "masks" / "x.png", 32, 32, 0)
    assert set(discover(tmp_path, layout="folder")) == {"train", "val"}
    with pytest.raises(ValueError, match="unknown data layout 'nope'"):
        discover(tmp_path, layout="nope")


def test_missing_root_says_where_and_how_to_get_helen(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        discover(tmp_path / "nowhere")
    msg = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    assert "python -m portraitseg.data download helen" in msg and "data=synthetic" in msg


def test_unrecognised_folder(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no dataset layout recognised"):
        discover(tmp_path)


def test_empty_split_list(tmp_path):
    (tmp_path / "train.txt").write_text("\n")
    with pytest.raises(DatasetNotFoundError, match="lists no samples"):
        discover(tmp_path)
