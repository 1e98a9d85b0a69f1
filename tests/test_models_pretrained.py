"""The bundled EfficientNet-Lite0 ImageNet weights: a real classification check, not just key names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from portraitseg.models import create_model
from portraitseg.models.pretrained import efficientnet_lite0_state_dict
from portraitseg.models.segmenter import IMAGENET_MEAN, IMAGENET_STD

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
timm = pytest.importorskip("timm")

#: ImageNet classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
CATS = set(range(281, 286))
ESPRESSO = 967


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_lite0_state_dict())
    return model.eval()


def imagenet_input(photo) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, 224, 224)`` normalized with the ImageNet mean/std."""
    x = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CATS), ("coffee", {ESPRESSO})])
def test_bundled_weights_classify_real_photos(classifier, photo, expected):
    with torch.no_grad():
        probs = classifier(imagenet_input(getattr(skimage_data, photo)())).softmax(1)[0]
    top1 = int(probs.argmax())
    assert top1 in expected, f"{photo}: top-1 class {top1} ({float(probs[top1]):.2f})"
    assert float(probs[sorted(expected)].sum()) > 0.5


def test_mapping_covers_every_timm_tensor():
    weights = efficientnet_lite0_state_dict()
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert list(weights) == list(reference)
    assert all(weights[k].shape == reference[k].shape for k in reference)


@pytest.mark.parametrize("arch", ["fcn", "unet"])
def test_segmenter_encoder_gets_the_bundled_weights(classifier, arch):
    """The smp ``tu-efficientnet_lite0`` encoder inside a segmenter computes timm's features."""
    model = create_model(arch, "tu-efficientnet_lite0", "imagenet", classes=11).eval()
    assert model.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    x = imagenet_input(skimage_data.chelsea())
    with torch.no_grad():
        ours = model.net.encoder(x)[-1]
        # timm's classifier trunk up to the last block (conv_head and pooling come after)
        blocks = classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
    assert ours.shape == blocks.shape
    assert torch.allclose(ours, blocks, atol=1e-5)


def test_imagenet_weights_differ_from_random_init():
    pretrained = create_model("fcn", "tu-efficientnet_lite0", "imagenet", classes=2)
    scratch = create_model("fcn", "tu-efficientnet_lite0", None, classes=2)
    key = next(k for k in pretrained.state_dict() if k.endswith("conv_stem.weight"))
    expected = efficientnet_lite0_state_dict()["conv_stem.weight"]
    assert torch.equal(pretrained.state_dict()[key], expected)
    assert not torch.equal(scratch.state_dict()[key], expected)
