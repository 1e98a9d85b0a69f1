"""Augmentations: the left/right-aware flip, letterboxing, and the real HELEN* round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from portraitseg.classes import FLIP_PERMUTATION, flip_label, flip_logits
from portraitseg.data import discover, load_sample
from portraitseg.data.layouts import read_pair_list
from portraitseg.data.transforms import EvalTransform, HorizontalFlipSwap, train_transform


def lateral_centroids(label: np.ndarray) -> dict[int, float]:
    return {c: float(np.nonzero(label == c)[1].mean()) for c in (2, 3, 4, 5) if (label == c).any()}


def test_flip_swaps_left_and_right_classes():
    label = np.zeros((4, 6), np.uint8)
    label[0, 0], label[0, 5], label[1, 1], label[1, 4] = 2, 3, 4, 5
    out = HorizontalFlipSwap(p=1.0)(image=np.zeros((4, 6, 3), np.uint8), mask=label)["mask"]
    assert out[0, 0] == 2 and out[0, 5] == 3 and out[1, 1] == 4 and out[1, 4] == 5
    np.testing.assert_array_equal(out, flip_label(label))


def test_flip_twice_is_identity_and_tensor_version_agrees():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 11, (9, 13), dtype=np.uint8)
    np.testing.assert_array_equal(flip_label(flip_label(label)), label)
    np.testing.assert_array_equal(flip_label(torch.from_numpy(label)).numpy(), flip_label(label))


def test_flip_logits_undoes_a_mirrored_prediction():
    logits = torch.randn(2, 11, 5, 7)
    mirrored = logits.flip(-1)[:, list(FLIP_PERMUTATION)]  # what a model sees on a mirrored image
    torch.testing.assert_close(flip_logits(mirrored), logits)


def test_binary_flip_is_plain():
    mask = np.array([[0, 1, 1]], np.uint8)
    out = HorizontalFlipSwap(num_classes=2, p=1.0)(image=np.zeros((1, 3, 3), np.uint8), mask=mask)
    np.testing.assert_array_equal(out["mask"], mask[:, ::-1])


def test_train_transform_output_and_label_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (90, 70), dtype=np.uint8)
    out = train_transform(64)(image=image, mask=label)
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
    assert set(np.unique(out["mask"])) <= set(range(11))  # nearest-neighbour, no blended ids


def test_eval_transform_valid_region_maps_back():
    image = np.zeros((50, 100, 3), np.uint8)
    label = np.zeros((50, 100), np.uint8)
    label[:, 50:] = 1
    out = EvalTransform(64)(image=image, mask=label)
    assert out["image"].shape == (64, 64, 3) and out["valid_size"] == (32, 64)
    assert (out["mask"][32:] == 0).all()  # padding is background, bottom only
    assert (out["mask"][:32, 32:] == 1).all() and (out["mask"][:32, :32] == 0).all()


def test_real_helenstar_flip_round_trip(helenstar_root):
    """On real HELEN* labels, the viewer's-left classes are on the left, and stay so after a flip."""
    samples = read_pair_list(helenstar_root / "sample40.txt", helenstar_root)
    assert len(samples) == 40
    checked = 0
    for sample in samples[:10]:
        image, label = load_sample(sample)
        assert image.shape == (256, 256, 3) and label.max() <= 10
        before = lateral_centroids(label)
        flipped = HorizontalFlipSwap(p=1.0)(image=image, mask=label)
        after = lateral_centroids(flipped["mask"])
        np.testing.assert_array_equal(flipped["image"], image[:, ::-1])
        for left, right in ((2, 3), (4, 5)):
            if left in before and right in before:
                assert before[left] < before[right], sample.image.name
                assert after[left] < after[right], sample.image.name
                checked += 1
        back = HorizontalFlipSwap(p=1.0)(image=flipped["image"], mask=flipped["mask"])
        np.testing.assert_array_equal(back["mask"], label)
    assert checked >= 10


def test_real_helenstar_layout(helenstar_root):
    splits = discover(helenstar_root)
    assert len(splits["train"]) == 1999 and "test" not in splits


@pytest.mark.parametrize("size", [128, 256])
def test_real_sample_through_train_transform(helenstar_root, size):
    sample = read_pair_list(helenstar_root / "sample40.txt", helenstar_root)[0]
    image, label = load_sample(sample)
    out = train_transform(size)(image=image, mask=label)
    assert out["image"].shape == (size, size, 3)
    assert set(np.unique(out["mask"])) <= set(range(11))
