"""Resizes of photo tensors: a uint8 photo read in parts gives what its float copy gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portraitseg.inputs import stack_images
from portraitseg.sizing import area_resize, as_float, resize_tensor


def photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    seeded = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=seeded)


@pytest.mark.parametrize("size", [(75, 100), (173, 231), (301, 401), (600, 800)])
def test_area_resize_of_uint8_bands_equals_the_2d_pooling(size):
    image = photo(600, 800)
    got = area_resize(image, size, band=64)  # 10 bands, the last one short
    want = F.adaptive_avg_pool2d(image.float() / 255, size)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_area_resize_reads_channels_last_views_and_floats():
    image = photo(300, 200)
    view = torch.from_numpy(image[0].permute(1, 2, 0).numpy().copy()).permute(2, 0, 1)[None]  # an HWC array
    torch.testing.assert_close(area_resize(view, (31, 21), band=50), area_resize(image, (31, 21), band=50))
    floats = image.float() / 255
    torch.testing.assert_close(area_resize(floats, (31, 21)), F.adaptive_avg_pool2d(floats, (31, 21)))


def exact_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` -> ``(h, w, C)`` means weighting each input pixel by the part of it an output
    pixel covers (the definition of an area reduction), in float64."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        edges = np.arange(n_out + 1) * n_in / n_out
        lo, hi = edges[:-1, None], edges[1:, None]
        pixel = np.arange(n_in)[None]
        cover = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
        return cover / cover.sum(1, keepdims=True)

    rows, cols = weights(image.shape[0], size[0]), weights(image.shape[1], size[1])
    return np.einsum("jw,iwc->ijc", cols, np.einsum("ih,hwc->iwc", rows, image.astype(np.float64)))


@pytest.mark.parametrize("size", [(150, 200), (173, 231), (300, 400)])
def test_area_resize_of_a_large_uint8_photo_takes_the_exact_area_means(size):
    image = photo(600, 800, seed=3)
    view = torch.from_numpy(image[0].permute(1, 2, 0).numpy().copy()).permute(2, 0, 1)[None]  # an HWC array
    want = torch.from_numpy(exact_area(view[0].permute(1, 2, 0).numpy(), size)).permute(2, 0, 1)[None] / 255
    for x in (image, view):  # a channels-last photo array is read in place, any other layout copied
        got = area_resize(x, size, opencv_min_pixels=0)
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want.float(), atol=0.5 / 255 + 1e-6, rtol=0)  # rounded to 8 bits
    if 600 % size[0] == 0 and 800 % size[1] == 0:  # a whole factor: the means of PyTorch's pooling path
        torch.testing.assert_close(area_resize(image, size, opencv_min_pixels=0), area_resize(image, size),
                                   atol=0.5 / 255 + 1e-6, rtol=0)


def test_area_resize_takes_pytorchs_path_below_the_opencv_size_and_when_growing():
    image = photo(60, 80)
    floats = image.float() / 255
    small = area_resize(image, (17, 23))
    torch.testing.assert_close(small, F.adaptive_avg_pool2d(floats, (17, 23)), atol=1e-6, rtol=0)
    grown = area_resize(image, (120, 160), opencv_min_pixels=0)
    torch.testing.assert_close(grown, F.adaptive_avg_pool2d(floats, (120, 160)), atol=1e-6, rtol=0)


def test_resize_tensor_converts_uint8_after_subsampling():
    image = photo(900, 1200)
    torch.testing.assert_close(resize_tensor(image, (96, 128)), resize_tensor(image.float() / 255, (96, 128)))
    same = resize_tensor(photo(32, 48), (32, 48))
    assert same.dtype == torch.float32 and float(same.max()) <= 1.0


def test_as_float_scales_uint8_only():
    image = photo(4, 5)
    torch.testing.assert_close(as_float(image), image.float() / 255)
    floats = torch.rand(1, 3, 4, 5)
    assert as_float(floats) is floats


def test_stack_images_keeps_uint8_photos_without_copying():
    array = photo(40, 60)[0].permute(1, 2, 0).numpy().copy()  # (H, W, 3) as PIL/OpenCV hold it
    kept = stack_images(array, keep_uint8=True)
    assert kept.dtype == torch.uint8 and kept.shape == (1, 3, 40, 60)
    assert kept.data_ptr() == torch.from_numpy(array).data_ptr()  # a view: nothing copied
    gray = stack_images(array[..., 0], keep_uint8=True)  # gray repeated into a new uint8 batch
    assert gray.dtype == torch.uint8 and torch.equal(gray[0, 2], torch.from_numpy(array[..., 0]))
    mixed = stack_images([array, array.astype(np.float32) / 255], keep_uint8=True)
    assert mixed.dtype == torch.float32  # not every photo uint8: the float batch
    torch.testing.assert_close(mixed[0], mixed[1])
