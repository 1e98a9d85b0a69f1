"""HelenDataset decoding and its named errors for every kind of bad input."""

from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_pair
from portraitseg.data import HelenDataset, Sample, load_sample
from portraitseg.data.transforms import EvalTransform
from portraitseg.io import InputError, read_image


def pair(tmp_path: Path, name: str = "a", h: int = 32, w: int = 40) -> Sample:
    img, lbl = tmp_path / f"{name}.png", tmp_path / f"{name}_label.png"
    write_pair(img, lbl, h, w, seed=0)
    return Sample(name, img, lbl)


def test_sample_dict_contract(tmp_path):
    ds = HelenDataset([pair(tmp_path)], EvalTransform(64))
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype.is_floating_point
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
    assert tuple(item["valid_size"].tolist()) == (51, 64)  # 32x40 letterboxed to 64 wide
    assert item["id"] == "a"


def test_empty_split_raises():
    with pytest.raises(ValueError, match="empty split"):
        HelenDataset([])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_unreadable_image_is_named(tmp_path, content, message):
    sample = pair(tmp_path)
    sample.image.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_sample(sample)
    assert sample.image.name in str(err.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_named(tmp_path, fmt):
    sample = pair(tmp_path)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, fmt)
    sample.image.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="a.png") as err:
        load_sample(sample)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value) or "cannot" in str(err.value)


def test_missing_label_is_named(tmp_path):
    sample = pair(tmp_path)
    sample.label.unlink()
    with pytest.raises(InputError, match="a_label.png: no such file"):
        load_sample(sample)


def test_label_size_mismatch_is_named(tmp_path):
    sample = pair(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(sample.label)
    with pytest.raises(InputError, match=r"a_label.png: label is 10x10 but its image a.png is 40x32"):
        load_sample(sample)


def test_label_ids_out_of_range_are_named(tmp_path):
    sample = pair(tmp_path)
    label = np.zeros((32, 40), np.uint8)
    label[0, 0], label[1, 1] = 11, 255
    Image.fromarray(label).save(sample.label)
    with pytest.raises(InputError, match=r"a_label.png: label ids \[11, 255\] outside 0..10"):
        load_sample(sample)


def test_binary_masks_for_two_classes(tmp_path):
    sample = pair(tmp_path)
    mask = np.zeros((32, 40), np.uint8)
    mask[5:20, 5:20] = 255
    Image.fromarray(mask).save(sample.label)
    _, label = load_sample(sample, num_classes=2)
    assert set(np.unique(label)) == {0, 1} and label.sum() == 15 * 15


def test_pixel_limit(tmp_path):
    sample = pair(tmp_path, h=100, w=100)
    with pytest.raises(InputError, match="exceeds the limit"):
        load_sample(sample, max_pixels=5000)


def test_decompression_bomb_header_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")  # IHDR width/height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the chunk CRC valid
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="3600.0 MP exceeds the limit"):
        read_image(path)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_colour_modes_are_converted(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 255, (16, 16, 3), np.uint8)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    if mode == "I;16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(rgb).convert(mode).save(path)
    out = read_image(path)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    if mode == "I;16":  # 16-bit scaled to 8-bit, not clipped
        np.testing.assert_allclose(out[..., 0], rgb[..., 0], atol=1)
    if mode == "L":
        assert (out[..., 0] == out[..., 1]).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    # a 20x10 (w x h) image with a red top-left corner; after orientation the marker moves
    img = np.zeros((10, 20, 3), np.uint8)
    img[:3, :3] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=100)
    out = read_image(path)
    expected = {1: (10, 20), 2: (10, 20), 3: (10, 20), 4: (10, 20)}.get(orientation, (20, 10))
    assert out.shape[:2] == expected
    # the upright image must match PIL's own transpose of the stored pixels
    from PIL import ImageOps

    ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(out, ref)


def test_skip_bad_logs_and_substitutes(tmp_path, caplog):
    good, bad = pair(tmp_path, "good"), pair(tmp_path, "bad")
    bad.image.write_bytes(b"")
    ds = HelenDataset([bad, good], EvalTransform(32), skip_bad=True)
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert item["id"] == "good"
    assert any("bad.png" in r.message and "skip_bad" in r.message for r in caplog.records)


def test_without_skip_bad_errors_propagate(tmp_path):
    bad = pair(tmp_path, "bad")
    bad.image.write_bytes(b"")
    with pytest.raises(InputError, match="bad.png"):
        HelenDataset([bad])[0]


def test_inputs_are_not_modified(tmp_path):
    import hashlib

    sample = pair(tmp_path)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (sample.image, sample.label)}
    HelenDataset([sample], EvalTransform(64))[0]
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (sample.image, sample.label)}
    assert before == after
