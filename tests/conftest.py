"""Shared fixtures: the real HELEN* copy (skipped visibly when absent), tiny on-disk layouts and
the tiny training run's overrides (``from conftest import TINY``)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tests use tiny models: one intra-op thread each is as fast and avoids oversubscribing the
# 2-core machines when pytest starts training subprocesses (inherited through the env).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
HELENSTAR = Path(os.environ.get("PORTRAITSEG_HELENSTAR", REPO.parent / "shared" / "data" / "helenstar"))

#: Hydra overrides of a tiny, fast training run: a 0.46 M-parameter timm encoder, no pretrained
#: weights needed, one epoch of 2 steps and 1 validation batch, no progress bar.
TINY_MODEL = ["model=fcn_mobilenet_v2", "model.encoder_name=tu-mobilenetv3_small_050"]
TINY_TRAINER = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "~callbacks.progress_bar", "scheduler.warmup_steps=1",
    "module.num_log_images=2",
]
#: ... on 8 synthetic 64 px portraits, batch 2 (append overrides to change a value: the last wins)
TINY = ["data=synthetic", "data.synthetic.n=8", "data.synthetic.size=64", "data.image_size=64",
        "data.batch_size=2", *TINY_MODEL, *TINY_TRAINER]


@pytest.fixture(scope="session")
def helenstar_root() -> Path:
    """The real HELEN* training split at ../shared/data/helenstar (CI has it)."""
    if not (HELENSTAR / "train.txt").is_file():
        pytest.skip(f"real HELEN* data not found at {HELENSTAR} (set PORTRAITSEG_HELENSTAR)")
    return HELENSTAR


def face_label(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A small Helen-like label map: hair, skin, brows/eyes left and right, nose, lips."""
    label = np.zeros((h, w), np.uint8)
    label[: h // 3, w // 5 : 4 * w // 5] = 10
    label[h // 4 : 7 * h // 8, w // 4 : 3 * w // 4] = 1
    cy, cx = h // 2, w // 2
    label[cy - 6 : cy - 4, cx - 12 : cx - 4] = 2
    label[cy - 6 : cy - 4, cx + 4 : cx + 12] = 3
    label[cy - 3 : cy - 1, cx - 11 : cx - 5] = 4
    label[cy - 3 : cy - 1, cx + 5 : cx + 11] = 5
    label[cy : cy + 4, cx - 2 : cx + 2] = 6
    label[cy + 6, cx - 5 : cx + 5] = 7
    label[cy + 7, cx - 4 : cx + 4] = 8
    label[cy + 8, cx - 5 : cx + 5] = 9
    shift = int(rng.integers(-2, 3))
    return np.roll(label, shift, axis=1)


def write_pair(image_path: Path, label_path: Path | None, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = face_label(h, w, rng)
    image = (rng.random((h, w, 3)) * 60 + np.array([40, 80, 120])).astype(np.uint8)
    image[label > 0] = (np.asarray([200, 150, 120]) * 0.8).astype(np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path)
    if label_path is not None:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(label_path)
    return label


@pytest.fixture
def tiny_helenstar(tmp_path: Path) -> Path:
    """A HELEN*-layout dataset: 10 train + 4 test pairs of 64x64."""
    root = tmp_path / "helenstar"
    for split, n in (("train", 10), ("test", 4)):
        lines = []
        for i in range(n):
            img = f"{split}/images/image_{i}.png"
            lbl = f"{split}/labels/label_{i}.png"
            write_pair(root / img, root / lbl, 64, 64, seed=i + (100 if split == "test" else 0))
            lines.append(f"{img} {lbl}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


#: the model config of the tiny segmenter (FCN on MobileNetV3-small-0.5, 0.46 M parameters)
TINY_NET = {"_target_": "portraitseg.models.create_model", "arch": "fcn",
            "encoder_name": "tu-mobilenetv3_small_050", "encoder_weights": None, "classes": 11}


def tiny_checkpoint(path: Path, net: Any = None, **config: Any) -> Path:
    """Write ``path``: a Lightning checkpoint as ``python train.py`` writes it (weights, the model's
    config, training size 64) of ``net``, or of a fresh seeded model of ``TINY_NET`` with ``config``
    changed (e.g. ``person_head=True``, ``arch="fpn"``)."""
    import torch

    from portraitseg.models import create_model

    net_config = {**TINY_NET, **config}
    if net is None:
        torch.manual_seed(0)
        net = create_model(**{k: v for k, v in net_config.items() if k != "_target_"})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "pytorch-lightning_version": "2.5.0", "hyper_parameters": {"net": net_config},
                "datamodule_hyper_parameters": {"image_size": 64}, "epoch": 0, "global_step": 1}, path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights export of an untrained tiny Helen segmenter (:data:`TINY_NET`, trained size 64),
    for plumbing tests where what it segments is moot."""
    from portraitseg.models.checkpoint import export_weights

    root = tmp_path_factory.mktemp("tiny_weights")
    return export_weights(tiny_checkpoint(root / "last.ckpt"), root / "model.pt")


def make_clip(path: Path, frames: list[np.ndarray], rate: int = 10, pts: list[int] | None = None,
              audio: bool = True, time_base: Fraction | None = None, rotation: int | None = None) -> Path:
    """Write ``frames`` (H, W, 3) uint8 as an H.264 MP4 (CRF 10; with ``pts`` in ``time_base`` if given,
    a display ``rotation`` in degrees if given) and a silent AAC track."""
    import av

    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=rate, options={"crf": "10"})
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    if rotation is not None:
        video.set_display_rotation(rotation)
    if time_base is not None:
        video.time_base = video.codec_context.time_base = time_base
    sound = out.add_stream("aac", rate=16000) if audio else None
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i if pts is None else pts[i]
        if time_base is not None:
            frame.time_base = time_base
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    if sound is not None:
        samples = np.zeros((2, 16000 * len(frames) // rate), np.float32)
        chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        chunk.sample_rate, chunk.pts = 16000, 0
        for packet in [*sound.encode(chunk), *sound.encode()]:
            out.mux(packet)
    out.close()
    return path
