"""The two-output model and data=mixed: masked losses, the mixed sampler, aligned augmentation,
old/new checkpoints, per-source validation, a short training run and the real sources."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image

from portraitseg.cli import config_dir
from portraitseg.data.mixed import (
    IGNORE,
    MixedDataModule,
    MixedDataset,
    load_targets,
    source_samples,
    zoom_out,
)
from portraitseg.io import InputError
from portraitseg.lit import losses
from portraitseg.lit.losses import lovasz_softmax, parse_loss, person_loss
from portraitseg.lit.metrics import PersonMetrics, person_scores
from portraitseg.models import create_model
from portraitseg.models.checkpoint import export_weights, load_segmenter

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PORTRAITSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY_ENCODER = "tu-mobilenetv3_small_050"


# ------------------------------------------------------------------------------------------
# losses


def test_parse_loss_skips_unknown_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 11, 8, 8, requires_grad=True)
    target = torch.randint(0, 11, (2, 8, 8))
    target[0] = IGNORE  # a whole sample without Helen labels
    target[1, :4] = IGNORE
    loss = parse_loss(logits, target)
    known = target != IGNORE
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[known], target[known])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0].abs().max() == 0 and logits.grad[1, :, :4].abs().max() == 0
    assert logits.grad[1, :, 4:].abs().max() > 0


def test_parse_loss_weighted_matches_torch_and_all_unknown_is_zero():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 11, 6, 6), torch.randint(0, 11, (2, 6, 6))
    weight = torch.rand(11) + 0.5
    assert parse_loss(logits, target, weight).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weight).item(), rel=1e-5)
    empty = torch.full_like(target, IGNORE)
    logits.requires_grad_(True)
    loss = parse_loss(logits, empty, weight)
    assert loss.item() == 0.0
    loss.backward()  # still attached to the graph
    assert logits.grad.abs().max() == 0


def test_ohem_averages_the_hardest_share():
    torch.manual_seed(2)
    logits, target = torch.randn(1, 11, 10, 10), torch.randint(0, 11, (1, 10, 10))
    target[0, 0] = IGNORE
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[target != IGNORE]
    k = int(0.25 * per_pixel.numel())
    assert parse_loss(logits, target, ohem=0.25).item() == pytest.approx(
        per_pixel.topk(k).values.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="ohem"):
        parse_loss(logits, target, ohem=1.5)


def _lovasz_reference(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax as the paper writes it: every known pixel sorted, class by class."""
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = target.flatten()
    probs, labels = probs[labels != IGNORE], labels[labels != IGNORE]
    terms = []
    for c in labels.unique():
        fg = (labels == c).double()
        errors, order = (fg - probs[:, c]).abs().sort(descending=True)
        fg = fg[order]
        jaccard = 1 - (fg.sum() - fg.cumsum(0)) / (fg.sum() + (1 - fg).cumsum(0))
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
        terms.append((errors * jaccard).sum())
    return torch.stack(terms).mean()


def test_lovasz_of_one_hot_probabilities_is_one_minus_iou():
    torch.manual_seed(4)
    target, pred = torch.randint(0, 11, (2, 12, 12)), torch.randint(0, 11, (2, 12, 12))
    target[0, :5] = IGNORE
    logits = F.one_hot(pred, 11).permute(0, 3, 1, 2).float() * 50
    known = target != IGNORE
    ious = [((pred == c) & (target == c)).sum() / (((pred == c) | (target == c)) & known).sum()
            for c in target[known].unique()]
    assert lovasz_softmax(logits, target).item() == pytest.approx(1 - torch.stack(ious).mean().item(),
                                                                  abs=1e-6)
    assert lovasz_softmax(F.one_hot(target.clamp(max=10), 11).permute(0, 3, 1, 2).float() * 50,
                          target).item() < 1e-6


def test_lovasz_matches_the_full_sort_and_its_gradient(monkeypatch):
    torch.manual_seed(5)
    logits = torch.randn(2, 11, 10, 10, dtype=torch.float64) * 3
    target = torch.randint(0, 11, (2, 10, 10))
    target[1, :, :3] = IGNORE
    reference = _lovasz_reference(logits, target)
    # the tail left out of the sort changes the loss by at most LOVASZ_TAIL
    assert abs(lovasz_softmax(logits, target).item() - reference.item()) <= losses.LOVASZ_TAIL
    monkeypatch.setattr(losses, "LOVASZ_TAIL", -1.0)  # every pixel sorted: the paper's loss exactly
    x = logits.clone().requires_grad_(True)
    lovasz_softmax(x, target).backward()
    y = logits.clone().requires_grad_(True)
    _lovasz_reference(y, target).backward()
    assert lovasz_softmax(logits, target).item() == pytest.approx(reference.item(), rel=1e-10)
    assert torch.allclose(x.grad, y.grad, atol=1e-12)
    assert x.grad[1, :, :, :3].abs().max() == 0  # unknown pixels get no gradient
    small = logits[1:, :, :4, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lovasz_softmax(t, target[1:, :4, :4]), (small,))


def test_lovasz_without_known_pixels_and_bad_shapes():
    logits = torch.randn(1, 11, 4, 4, requires_grad=True)
    loss = lovasz_softmax(logits, torch.full((1, 4, 4), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max() == 0
    with pytest.raises(ValueError, match=r"logits \(B, K, H, W\) and target \(B, H, W\)"):
        lovasz_softmax(logits, torch.zeros(1, 4, 5, dtype=torch.long))


def test_person_loss_masks_unknown_and_soft_targets():
    torch.manual_seed(3)
    logit = torch.randn(3, 1, 8, 8, requires_grad=True)
    target = torch.rand(3, 1, 8, 8)
    target[0] = -1.0  # source without a person target
    target[1, :, :, :4] = -1.0
    loss = person_loss(logit, target)
    loss.backward()
    assert logit.grad[0].abs().max() == 0 and logit.grad[1, :, :, :4].abs().max() == 0
    assert logit.grad[2].abs().max() > 0
    # BCE part alone equals torch's over the known pixels
    known = target >= 0
    bce = F.binary_cross_entropy_with_logits(logit[known], target[known])
    assert person_loss(logit, target, iou_weight=0).item() == pytest.approx(bce.item(), rel=1e-6)
    # an empty matte is a valid target and predicting it empty costs (almost) nothing
    empty = torch.zeros(1, 1, 8, 8)
    assert person_loss(torch.full((1, 1, 8, 8), -20.0), empty).item() < 1e-6
    assert person_loss(logit, torch.full_like(target, -1.0)).item() == 0.0


# ------------------------------------------------------------------------------------------
# metrics


def test_person_scores_by_hand():
    target = torch.zeros(1, 1, 20, 20)
    target[..., 5:15, 5:15] = 1
    pred = torch.zeros(1, 1, 20, 20)
    pred[..., 5:15, 5:10] = 0.9
    s = person_scores(pred, target)
    assert s["iou"].item() == pytest.approx(0.5)
    assert s["mad"].item() == pytest.approx((50 * 0.1 + 50 * 1.0) / 400)
    perfect = person_scores(target, target)
    assert perfect["iou"].item() == 1 and perfect["boundary_f"].item() == 1
    both_empty = person_scores(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert both_empty["iou"].item() == 1 and both_empty["boundary_f"].item() == 1
    shifted = torch.roll(target, 6, dims=-1)  # far beyond the 1-pixel tolerance at 20x20
    assert person_scores(shifted, target)["boundary_f"].item() < 0.5
    metric = PersonMetrics()
    metric.update(torch.cat([pred, target]), torch.cat([target, torch.full_like(target, -1.0)]))
    assert metric.compute()["person_iou"].item() == pytest.approx(0.5)  # the unknown one skipped


# ------------------------------------------------------------------------------------------
# data


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def halves(h: int = 48, w: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left half red and labelled left brow (2), right half blue labelled right brow (3); the
    person matte covers the red half."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (255, 0, 0)
    image[:, w // 2 :] = (0, 0, 255)
    label = np.full((h, w), 3, np.uint8)
    label[:, : w // 2] = 2
    matte = np.zeros((h, w), np.uint8)
    matte[:, : w // 2] = 255
    return image, label, matte


@pytest.fixture
def two_sources(tmp_path: Path) -> dict:
    """A HELEN*-layout source with labels + person mattes and a folder source of person masks."""
    helen, people = tmp_path / "helen", tmp_path / "people"
    image, label, matte = halves()
    lines = []
    for i in range(6):
        _write(helen / f"train/images/image_{i}.png", image)
        _write(helen / f"train/labels/label_{i}.png", label)
        _write(helen / f"person/person_{i}.png", matte)
        lines.append(f"train/images/image_{i}.png train/labels/label_{i}.png")
    (helen / "train.txt").write_text("\n".join(lines) + "\n")
    for i in range(4):
        _write(people / f"images/p{i}.jpg", np.full((40, 30, 3), 90, np.uint8))
        mask = np.zeros((40, 30), np.uint8)
        mask[10:30, 8:22] = 255
        _write(people / f"masks/p{i}.png", mask)
    return {
        "helen": {"root": str(helen), "layout": "helenstar", "parse": True,
                  "person": "person/person_{num}.png", "weight": 1.0, "val_fraction": 0.34},
        "people": {"root": str(people), "layout": "folder", "parse": False, "person": "label",
                   "weight": 1.0, "val_fraction": 0.25},
    }


def test_targets_per_source_unknown_is_never_background(two_sources):
    people = source_samples("people", two_sources["people"])["train"]
    image, parse, matte = load_targets(people[0])
    assert set(np.unique(matte)) == {0, 255}
    # no Helen labels: unknown on the person, known background outside it (no class is off-person)
    assert (parse[matte == 255] == IGNORE).all() and (parse[matte == 0] == 0).all()
    helen = source_samples("helen", two_sources["helen"])["train"]
    _, parse, matte = load_targets(helen[0])
    assert set(np.unique(parse)) == {2, 3} and matte.max() == 255
    no_person = source_samples("helen", {**two_sources["helen"], "person": None})["train"]
    dataset = MixedDataset(no_person, {"helen": _eval()}, train=False)
    item = dataset[0]
    assert (item["person"] == -1).all() and (item["mask"] != IGNORE).all()


def _eval():
    from portraitseg.data.transforms import EvalTransform

    return EvalTransform(32)


def test_declared_person_folder_missing_and_wrong_size_are_named(two_sources, tmp_path):
    cfg = dict(two_sources["helen"], person="mattes/person_{num}.png")
    with pytest.raises(FileNotFoundError, match=r"person matte folder missing.*mattes"):
        source_samples("helen", cfg)
    with pytest.raises(ValueError, match="declares no target"):
        source_samples("helen", dict(two_sources["helen"], parse=False, person=None))
    with pytest.raises(ValueError, match="set parse: false"):
        source_samples("people", dict(two_sources["people"], parse=True))
    root = Path(two_sources["helen"]["root"])
    _write(root / "person/person_0.png", np.zeros((20, 20), np.uint8))  # wrong size
    sample = source_samples("helen", two_sources["helen"])["train"][0]
    with pytest.raises(InputError, match=r"person_0.png: is 20x20 but its image image_0.png is 48x48"):
        load_targets(sample)


def test_sampler_follows_source_weights(two_sources):
    dm = MixedDataModule(two_sources, image_size=32, batch_size=2, num_workers=0, epoch_size=40)
    dm.setup()
    assert dm.val_names == ["helen", "people"]
    assert {k: len(v["val"]) for k, v in dm.splits.items()} == {"helen": 2, "people": 1}
    weights = dm.sample_weights()
    n_helen = len(dm.splits["helen"]["train"])
    # each source gets its weight in total, whatever its size
    assert weights[:n_helen].sum().item() == pytest.approx(1.0)
    assert weights[n_helen:].sum().item() == pytest.approx(1.0)
    loader = dm.train_dataloader()
    assert len(loader) == 20  # epoch_size / batch_size
    only = dict(two_sources, people=dict(two_sources["people"], weight=0.0))
    dm = MixedDataModule(only, image_size=32, batch_size=4, num_workers=0, epoch_size=16)
    sources = [s for batch in dm.train_dataloader() for s in batch["source"]]
    assert set(sources) == {"helen"} and len(sources) == 16


def test_augmentation_keeps_image_parse_and_matte_aligned(two_sources):
    """Flips swap left/right labels (class 2 stays on the viewer's left), the person matte follows
    the red pixels, and zoom-out pastes targets with their pixels."""
    aug = {"scale": [0.8, 1.2], "rotate": 10.0, "shift": 0.1, "color": 0.0, "flip": 0.5}
    dm = MixedDataModule(two_sources, image_size=48, num_workers=0, augment=aug,
                         zoom={"p": 1.0, "scale": [0.4, 0.9]})
    dataset = dm.train_dataset()
    dataset.transform.set_random_seed(0)
    n_helen = len(dm.splits["helen"]["train"])
    for i in range(40):
        item = dataset[i % n_helen]
        image, mask, person = item["image"], item["mask"], item["person"][0]
        red = (image[0] > 0.8) & (image[2] < 0.2)
        blue = (image[2] > 0.8) & (image[0] < 0.2)
        xs = torch.arange(48).expand(48, 48)
        # the helen sample is pasted into a canvas (helen or people): inside it, left of right
        brow2, brow3 = mask == 2, mask == 3
        if brow2.any() and brow3.any():
            assert xs[brow2].float().mean() < xs[brow3].float().mean()
        # away from edges (interpolation), labels and matte follow the pixels
        core = F.max_pool2d((~(red | blue)).float()[None, None], 3, 1, 1)[0, 0] == 0
        assert (person[red & core] > 0.5).all() and (person[blue & core] < 0.5).all()
        assert ((mask[red & core] == 2) | (mask[red & core] == 3)).all()
        assert (mask[(red | blue) & core] != IGNORE).all()


def test_zoom_out_pastes_targets_with_their_pixels():
    rng = np.random.default_rng(0)
    image, parse, matte = halves(40, 40)
    canvas = np.zeros((40, 40, 3), np.uint8)
    c_parse = np.full((40, 40), IGNORE, np.uint8)  # a person-only canvas
    c_person = np.zeros((40, 40), np.float32)
    out, out_parse, out_person = zoom_out(image, parse, matte / 255.0, canvas, c_parse, c_person, 0.5, rng)
    pasted = out.any(-1)
    assert pasted.sum() == 20 * 20
    assert (out_parse[pasted] != IGNORE).all() and (out_parse[~pasted] == IGNORE).all()
    assert np.allclose(out_person[~pasted], 0) and (out_person[pasted] > 0).any()
    assert canvas.max() == 0 and (c_parse == IGNORE).all()  # inputs unchanged


# ------------------------------------------------------------------------------------------
# models and files


def test_person_head_outputs_and_old_checkpoints_still_load(tmp_path):
    net = create_model("fpn", TINY_ENCODER, None, 11, person_head=True,
                       decoder_pyramid_channels=32, decoder_segmentation_channels=32)
    logits, person = net.segment(torch.rand(2, 3, 50, 70))
    assert logits.shape == (2, 11, 50, 70) and person.shape == (2, 1, 50, 70)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 11, 64, 64)  # forward: class logits only
    old = create_model("fcn", TINY_ENCODER, None, 11)
    assert old.segment(torch.rand(1, 3, 64, 64))[1] is None
    # the bundled model predates the person head: it loads and has none
    default, info = load_segmenter(REPO / "src/portraitseg/weights/default.pt")
    assert default.person_head == info["model"].get("person_head", False)


def _tiny_checkpoint(tmp_path: Path) -> Path:
    from portraitseg.lit import SegmentationModule

    cfg = {"_target_": "portraitseg.models.create_model", "arch": "fcn", "encoder_name": TINY_ENCODER,
           "encoder_weights": None, "classes": 11, "person_head": True}
    module = SegmentationModule(net=cfg)
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.6.0", "epoch": 0, "global_step": 0}, path)
    return path


def test_export_round_trip_keeps_the_person_head(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path)
    net, _ = load_segmenter(ckpt)
    out = export_weights(ckpt, tmp_path / "model.pt")
    again, info = load_segmenter(out)
    assert again.person_head and info["model"]["person_head"] is True
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net.segment(x), again.segment(x)
    assert torch.allclose(a[1], b[1], atol=5e-2)  # fp16 export


def test_onnx_export_carries_both_outputs(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from portraitseg.onnx_export import export_onnx, parity

    net, _ = load_segmenter(_tiny_checkpoint(tmp_path))
    path = export_onnx(net, tmp_path / "m.onnx", image_size=(64, 64))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "person"]
    logits, person = session.run(None, {"image": np.random.rand(2, 3, 96, 64).astype(np.float32)})
    assert logits.shape == (2, 11, 96, 64) and person.shape == (2, 1, 96, 64)
    assert parity(net, path, [torch.rand(1, 3, 64, 96)]) < 1e-3


# ------------------------------------------------------------------------------------------
# training through the config tree


def test_mixed_training_run_logs_per_source_metrics(tmp_path, two_sources):
    from portraitseg.cli.train import train

    overrides = [
        "experiment=person_mixed", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
        "model=fcn_mobilenet_v2", f"model.encoder_name={TINY_ENCODER}", "model.person_head=true",
        "data.image_size=64", "data.batch_size=2", "data.num_workers=0", "data.epoch_size=4",
        "~data.sources.helenstar", "~data.sources.ccp", "~data.sources.synthetic",
        f"+data.sources.helen={{root: {two_sources['helen']['root']}, layout: helenstar, parse: true, "
        "person: 'person/person_{num}.png', weight: 1.0, val_fraction: 0.34}",
        f"+data.sources.people={{root: {two_sources['people']['root']}, layout: folder, parse: false, "
        "person: label, weight: 1.0, val_fraction: 0.25}",
        "trainer.max_epochs=1", "trainer.max_time=null", "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0", "~callbacks.progress_bar", "scheduler.warmup_steps=1",
        "module.num_log_images=2",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    for key in ("val/helen/f1_overall", "val/helen/person_iou", "val/people/person_iou",
                "val/people/person_boundary_f", "val/people/person_mad", "val/score",
                "train/person_loss_epoch", "train/parse_loss_epoch"):
        assert key in metrics, key
    assert "val/people/f1_overall" not in metrics  # a source without Helen labels has no parse score
    assert list((tmp_path / "run").rglob("images/val_epoch000.png"))
    net, info = load_segmenter(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert net.person_head and "score" in info["metrics"]


# ------------------------------------------------------------------------------------------
# the real sources (CI has them)


def test_real_sources_load_with_both_targets():
    if not (SHARED / "ccp_person" / "masks").is_dir() or not (SHARED / "helenstar" / "person").is_dir():
        pytest.skip(f"real HELEN* / CCP data not found under {SHARED} (set PORTRAITSEG_SHARED_DATA)")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=mixed", f"paths.shared_data_dir={SHARED}"])
    sources = {k: v for k, v in cfg.data.sources.items() if k != "synthetic"}
    dm = MixedDataModule(sources, image_size=128, num_workers=0)
    dm.setup()
    counts = {k: {s: len(v) for s, v in d.items()} for k, d in dm.splits.items()}
    assert counts == {"helenstar": {"train": 1799, "val": 200}, "ccp": {"train": 904, "val": 100}}
    ccp = MixedDataset(dm.splits["ccp"]["val"][:2], dm._transforms(False), train=False)[0]
    assert 0.05 < ccp["person"].mean() < 0.6 and not ccp["has_parse"]
    assert (ccp["mask"][ccp["person"][0] > 0.5] == IGNORE).all() and (ccp["mask"] == 0).any()
    helen = MixedDataset(dm.splits["helenstar"]["val"][:2], dm._transforms(False), train=False)[0]
    assert (helen["mask"] != IGNORE).all() and helen["person"].min() >= 0


def test_data_check_reads_person_mask_sources(two_sources, capsys):
    from portraitseg.data.__main__ import main

    people = two_sources["people"]["root"]
    assert main(["check", people, "--person", "label"]) == 0
    out = capsys.readouterr().out
    assert "person share of the pixels 23.3%" in out and "no problems found" in out
    # without --person, 0/255 masks are class ids 255: named, with the way out
    assert main(["check", people]) == 1
    assert "--person label" in capsys.readouterr().out
    helen = two_sources["helen"]["root"]
    assert main(["check", helen, "--person", "person/person_{num}.png"]) == 0
    assert main(["check", helen, "--person", "mattes/m_{num}.png"]) == 1
    assert "person matte" in capsys.readouterr().out
