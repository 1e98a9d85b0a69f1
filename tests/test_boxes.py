"""Box operations in plain PyTorch agree with torchvision.ops (which the render path avoids)."""

from __future__ import annotations

import pytest
import torch

from portraitseg.boxes import batched_nms, nms, roi_align

tv_ops = pytest.importorskip("torchvision.ops")


def _boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(threshold):
    boxes = _boxes(300, 0)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(1))
    assert torch.equal(nms(boxes, scores, threshold), tv_ops.nms(boxes, scores, threshold))
    groups = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(batched_nms(boxes, scores, groups, threshold),
                       tv_ops.batched_nms(boxes, scores, groups, threshold))
    assert nms(boxes[:0], scores[:0], threshold).shape == (0,)


@pytest.mark.parametrize(("sampling", "aligned"), [(2, True), (-1, True), (-1, False), (1, False)])
def test_roi_align_matches_torchvision(sampling, aligned):
    image = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(3))
    outside = torch.tensor([[-10.0, -8.0, 30.0, 20.0], [60.0, 40.0, 90.0, 75.0]])
    boxes = torch.cat([_boxes(6, 4, 60.0), outside])
    rois = torch.cat([torch.tensor([0, 1, 0, 1, 0, 1, 1, 0], dtype=torch.float32)[:, None], boxes], 1)
    for scale, size in ((1.0, (7, 7)), (0.5, (12, 9))):
        got = roi_align(image, rois, size, scale, sampling, aligned)
        want = tv_ops.roi_align(image, rois, size, scale, sampling, aligned)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"rois \(K, 5\)"):
        roi_align(image, boxes, (4, 4))


def test_roi_align_reads_a_uint8_image_box_by_box():
    """An integer image is read only under each box; the crops equal those of its float copy
    (values kept, 0-255), boxes inside, across the border and outside included."""
    seeded = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 60, 80), dtype=torch.uint8, generator=seeded)
    rois = torch.tensor([[0, 10.3, 20.7, 50.2, 55.9], [1, -20.0, -10.0, 30.0, 40.0],
                         [0, 70.0, 50.0, 95.0, 75.0], [1, 0.0, 0.0, 80.0, 60.0], [0, 30.0, 30.0, 30.5, 31.0]])
    for sampling, aligned, scale in ((2, True, 1.0), (-1, False, 1.0), (-1, True, 0.5)):
        got = roi_align(image, rois, (12, 12), spatial_scale=scale, sampling_ratio=sampling, aligned=aligned)
        want = roi_align(image.float(), rois, (12, 12), spatial_scale=scale, sampling_ratio=sampling,
                         aligned=aligned)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=5e-3, rtol=0)  # coordinates normalised per region
