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
