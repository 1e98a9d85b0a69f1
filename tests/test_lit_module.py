"""SegmentationModule pieces without a Trainer: flip TTA, native-resolution test step, loss, hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.transforms import EvalTransform
from portraitseg.lit import SegmentationModule
from portraitseg.lit.losses import lovasz_softmax

NET = {"_target_": "portraitseg.models.create_model", "arch": "fcn", "encoder_name": "resnet18",
       "encoder_weights": None, "classes": NUM_CLASSES}


class SideNet(torch.nn.Module):
    """Scores the viewer's-left half as left brow (2) and the right half as right brow (3)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        x = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
        logits = torch.zeros(b, NUM_CLASSES, h, w)
        logits[:, 2:3] = -4 * x
        logits[:, 3:4] = 4 * x
        return logits


class ColourNet(torch.nn.Module):
    """Predicts hair (10) where the red channel is bright, skin (1) elsewhere."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(image.shape[0], NUM_CLASSES, *image.shape[-2:])
        logits[:, 10] = 20 * (image[:, 0] - 0.5)
        logits[:, 1] = -20 * (image[:, 0] - 0.5)
        return logits


def module_with(net: torch.nn.Module, **kwargs) -> SegmentationModule:
    module = SegmentationModule(net=NET, **kwargs)
    module.net = net
    return module


def test_flip_tta_swaps_left_and_right_back():
    image = torch.rand(2, 3, 8, 12)
    plain = module_with(SideNet())(image).argmax(1)
    tta = module_with(SideNet(), tta_flip=True).predict_logits(image).argmax(1)
    assert torch.equal(tta, plain), "a mirrored left brow must come back as a left brow"
    assert set(plain.unique().tolist()) == {2, 3}


def test_flip_tta_averages_the_two_predictions():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
    image = torch.rand(1, 3, 6, 10)
    tta = module_with(net, tta_flip=True).predict_logits(image)
    mirrored = net(image.flip(-1)).flip(-1)[:, [0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10]]
    assert torch.allclose(tta, 0.5 * (net(image) + mirrored), atol=1e-6)


def test_test_step_scores_at_native_label_resolution():
    """Letterbox padding is cropped and logits resized to each label's own size."""
    transform = EvalTransform(64)
    labels, items = [], []
    for h, w in ((30, 50), (48, 20)):
        label = torch.ones(h, w, dtype=torch.uint8)
        label[:, : w // 2] = 10
        rgb = (label == 10).numpy().astype("uint8")[..., None].repeat(3, -1) * 255
        out = transform(image=rgb, mask=label.numpy())
        items.append((torch.from_numpy(out["image"]).permute(2, 0, 1).float() / 255,
                      torch.tensor(out["valid_size"])))
        labels.append(label.long())
    batch = {"image": torch.stack([i for i, _ in items]),
             "valid_size": torch.stack([v for _, v in items]), "orig_mask": labels}
    module = module_with(ColourNet())
    module.test_step(batch, 0)
    cm = module.test_metrics.confusion
    assert int(cm.sum()) == 30 * 50 + 48 * 20, "every native label pixel counted once"
    assert int(cm[0].sum()) == 0 and int(cm[:, 0].sum()) == 0, "no padding scored as background"
    accuracy = float(cm.diag().sum()) / float(cm.sum())
    assert accuracy > 0.97


def test_loss_options():
    logits, mask = torch.randn(2, NUM_CLASSES, 4, 4), torch.randint(0, NUM_CLASSES, (2, 4, 4))
    weights = [float(i + 1) for i in range(NUM_CLASSES)]
    module = SegmentationModule(net=NET, loss={"class_weights": weights, "label_smoothing": 0.1})
    expected = F.cross_entropy(logits, mask, weight=torch.tensor(weights), label_smoothing=0.1)
    assert torch.allclose(module.loss(logits, mask), expected)
    with pytest.raises(ValueError, match="class_weights has 3 entries for 11 classes"):
        SegmentationModule(net=NET, loss={"class_weights": [1.0, 2.0, 3.0]})
    lovasz = SegmentationModule(net=NET, loss={"lovasz_weight": 0.5})
    assert torch.allclose(lovasz.loss(logits, mask),
                          F.cross_entropy(logits, mask) + 0.5 * lovasz_softmax(logits, mask))


def test_checkpoint_hook_makes_values_plain_and_stores_val_scores():
    module = SegmentationModule(net=NET)
    module._val_scores = {"f1_overall": 0.5}
    checkpoint = {"hyper_parameters": {"net": NET},
                  "datamodule_hyper_parameters": {"augment": OmegaConf.create({"scale": [1, 2]}),
                                                  "nested": [OmegaConf.create({"a": 1})]}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["datamodule_hyper_parameters"] == {"augment": {"scale": [1, 2]},
                                                         "nested": [{"a": 1}]}
    assert type(checkpoint["datamodule_hyper_parameters"]["augment"]) is dict
    assert checkpoint["portraitseg"] == {"val_metrics": {"f1_overall": 0.5}}
