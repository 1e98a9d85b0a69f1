"""Security: crafted checkpoints are never unpickled, secrets never land in outputs.

Archive extraction attacks (traversal, absolute paths, escaping links, devices) and checksum
mismatches of the dataset downloader are tested in tests/test_data_download.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from portraitseg.lit.callbacks import CheckpointError, check_checkpoint, resolve_ckpt_path
from portraitseg.models.checkpoint import load_segmenter

REPO = Path(__file__).resolve().parents[1]
RESUME_WIRED = "resolve_ckpt_path" in (REPO / "src/portraitseg/cli/train.py").read_text()


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: creates ``marker`` (stands for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like our Lightning checkpoint, with the payload in its hyperparameters."""
    torch.save({
        "state_dict": {"net.w": torch.zeros(1)},
        "optimizer_states": [], "lr_schedulers": [], "loops": {}, "epoch": 0, "global_step": 0,
        "pytorch-lightning_version": "2.6.6",
        "hyper_parameters": {"net": {"_target_": "portraitseg.models.create_model"}, "x": _Payload(marker)},
    }, path)
    return path


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted_checkpoint(tmp_path / "last.ckpt", marker)
    return path, marker


def test_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """Positive control: the payload works, so the refusals below mean something."""
    marker = tmp_path / "control"
    path = _crafted_checkpoint(tmp_path / "c.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_resume_check_refuses_and_runs_nothing(crafted):
    path, marker = crafted
    with pytest.raises(CheckpointError, match="refused"):
        check_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        resolve_ckpt_path(path, path.parent)
    assert not marker.exists()


def test_resume_last_refuses_instead_of_skipping(crafted, tmp_path):
    """An unsafe newest last.ckpt is an error, not silently replaced by an older checkpoint."""
    path, marker = crafted
    run = tmp_path / "outputs" / "train" / "runs" / "r1" / "checkpoints"
    run.mkdir(parents=True)
    os.replace(path, run / "last.ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        resolve_ckpt_path("last", tmp_path / "outputs" / "train")
    assert not marker.exists()


def test_load_segmenter_refuses(crafted):
    path, marker = crafted
    with pytest.raises(Exception, match="arbitrary code|weights_only"):
        load_segmenter(path)
    assert not marker.exists()


def _run(args: list[str], env: dict[str, str] | None = None, timeout: int = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_export_cli_refuses(crafted, tmp_path):
    path, marker = crafted
    proc = _run([sys.executable, "-m", "portraitseg.cli.main", "export", "--ckpt", str(path),
                 "--onnx", str(tmp_path / "m.onnx")])
    assert proc.returncode == 2 and "arbitrary code" in proc.stderr  # a usage error: the --ckpt file
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_render_cli_refuses(crafted, tmp_path):
    from portraitseg.io import write_image

    path, marker = crafted
    photo = tmp_path / "p.png"
    write_image(photo, torch.zeros(40, 40, 3, dtype=torch.uint8).numpy())
    proc = _run([sys.executable, "-m", "portraitseg.cli.main", "render", str(photo), "--ckpt", str(path),
                 "-o", str(tmp_path / "out")])
    assert proc.returncode != 0 and "arbitrary code" in proc.stderr
    assert not marker.exists()


def test_eval_refuses(crafted, tmp_path):
    path, marker = crafted
    proc = _run([sys.executable, str(REPO / "eval.py"), f"ckpt_path={path}", f"paths.log_dir={tmp_path}/out",
                 f"paths.data_dir={tmp_path}/data"], env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "arbitrary code" in proc.stderr
    assert not marker.exists()


@pytest.mark.skipif(not RESUME_WIRED, reason="cli/train.py does not call resolve_ckpt_path yet")
def test_train_resume_refuses_even_when_torch_is_told_to_trust(crafted, tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns torch.load's default to unsafe; resume still refuses."""
    path, marker = crafted
    proc = _run([sys.executable, str(REPO / "train.py"), f"ckpt_path={path}", f"paths.log_dir={tmp_path}/out",
                 f"paths.data_dir={tmp_path}/data", "data.synthetic.n=8", "data.synthetic.size=32",
                 "data.image_size=32", "logger=csv", "callbacks.progress_bar=null"],
                env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "refused" in proc.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# secrets

SECRETS = {
    "WANDB_API_KEY": "wandb-fake-key-0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_fakeTOKENabcdefghijklmnopqrstuvwxyz12",
    "GITHUB_TOKEN": "ghp_fakeTOKEN0123456789abcdefghijklmnopqr",
    "MY_SERVICE_API_KEY": "sk-fake-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEfakeSessionTokenValue000111222",
}


@pytest.mark.slow
def test_no_secret_from_the_environment_lands_in_outputs(tmp_path):
    """A short training with every logger (csv, tensorboard, wandb offline) and fake keys set."""
    out = tmp_path / "outputs"
    proc = _run([sys.executable, str(REPO / "train.py"), f"paths.log_dir={out}",
                 f"paths.data_dir={tmp_path}/data", "data.synthetic.n=12", "data.synthetic.size=48",
                 "data.image_size=64", "data.batch_size=4", "model.encoder_name=tu-mobilenetv3_small_050",
                 # a short run that writes checkpoints (debug configs write none)
                 "trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
                 "logger=many", "callbacks.progress_bar=null",
                 "module.num_log_images=2"],
                env={**SECRETS, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"},
                timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "metrics.csv", "last.ckpt"} <= names, names
    assert any(p.name.startswith("events.out.tfevents") for p in files), "tensorboard wrote nothing"
    assert any(p.suffix == ".wandb" for p in files), "wandb (offline) wrote nothing"
    leaks = [(p, name) for p in files for name, value in SECRETS.items()
             if value.encode() in p.read_bytes()]
    printed = proc.stdout + proc.stderr
    leaks += [("stdout/stderr", name) for name, value in SECRETS.items() if value in printed]
    assert not leaks, f"secrets found in outputs: {leaks}"


# --------------------------------------------------------------------------------------------
# render presets: a name, never a path; a preset builds the renderer and nothing else


def _hostile_yaml(folder: Path, marker: Path, name: str = "evil") -> Path:
    """A YAML whose ``_target_`` creates ``marker`` when instantiated (stands for any code)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"_target_: builtins.open\nfile: {marker}\nmode: w\n")
    return path


def test_hostile_preset_really_runs_when_instantiated(tmp_path):
    """Positive control: instantiating the YAML creates the marker, so the refusals below mean something."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    marker = tmp_path / "control"
    instantiate(OmegaConf.load(_hostile_yaml(tmp_path, marker))).close()
    assert marker.exists()


def _hostile_names(tmp_path: Path, marker: Path) -> list[object]:
    yaml = _hostile_yaml(tmp_path / "elsewhere", marker)
    from portraitseg.presets import presets_dir

    relative = os.path.relpath(yaml.with_suffix(""), presets_dir())
    return [str(yaml), str(yaml.with_suffix("")), relative, relative + ".yaml", "~/evil", "disc.yaml",
            "disc/", "./disc", " disc", "disc\n", "", "d!sc", None, 3]


def test_render_preset_refuses_paths_and_odd_names(tmp_path):
    from portraitseg.pipeline import PipelineError, render_preset

    marker = tmp_path / "pwned"
    for name in _hostile_names(tmp_path, marker):
        with pytest.raises(PipelineError, match="not a preset name|no such preset") as info:
            render_preset(name)
        assert "disc, gaussian, halo_free" in str(info.value)  # names the choices
    assert not marker.exists()


def test_render_cli_refuses_preset_paths(tmp_path, capsys):
    from portraitseg.cli.main import main

    marker = tmp_path / "pwned"
    photo = tmp_path / "p.png"
    photo.write_bytes(b"not read: the preset is refused first")
    for name in _hostile_names(tmp_path, marker)[:4]:
        with pytest.raises(SystemExit) as info:
            main(["render", str(photo), "--render", name, "-o", str(tmp_path / "out")])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--render: invalid choice" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_from_pretrained_refuses_preset_paths(tmp_path):
    from portraitseg.models.checkpoint import default_model_path
    from portraitseg.pipeline import PipelineError, PortraitPipeline

    if default_model_path() is None:
        pytest.skip("no bundled default model in this checkout")
    marker = tmp_path / "pwned"
    yaml = _hostile_yaml(tmp_path, marker)
    for name in (str(yaml), str(yaml.with_suffix(""))):
        with pytest.raises(PipelineError, match="not a preset name"):
            PortraitPipeline.from_pretrained("default", render=name, device="cpu")
    assert not marker.exists()


def test_a_preset_can_only_build_the_renderer(tmp_path, monkeypatch):
    """Even a file inside the presets folder, or an override, cannot name another constructor."""
    from portraitseg.pipeline import PipelineError, render_preset

    marker = tmp_path / "pwned"
    folder = tmp_path / "render"
    _hostile_yaml(folder, marker)
    (folder / "odd name.yaml").write_text("_target_: portraitseg.render.PortraitRenderer\n")
    monkeypatch.setattr("portraitseg.presets.presets_dir", lambda: folder)
    from portraitseg.presets import preset_names

    assert preset_names() == ["evil"]  # file names that are not preset names are not listed
    with pytest.raises(PipelineError, match="_target_ 'builtins.open' is not allowed"):
        render_preset("evil")
    monkeypatch.undo()
    with pytest.raises(PipelineError, match="is not allowed"):
        render_preset("disc", _target_="builtins.open", file=str(marker), mode="w")
    nested = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}  # Hydra builds these too
    with pytest.raises(PipelineError, match=r"person\._target_ 'builtins.open' is not allowed"):
        render_preset("disc", person=nested)
    with pytest.raises(PipelineError, match=r"keep\[0\]\._target_"):
        render_preset("disc", keep=[nested])
    assert not marker.exists()
