"""Sweeps: summarize, Optuna (config, in-job pruning, 2 trials end to end), a 2x2 grid, wandb
sweep arguments, the SLURM launcher and the experiment configs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from portraitseg import sweep
from portraitseg.data.synthetic import ensure_synthetic
from portraitseg.lit.pruning import OptunaPruning

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
SYNTH = {"n": 10, "seed": 0, "size": 64}


def compose_train(overrides: list[str], hydra: bool = True):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "synthetic", **SYNTH)


def tiny_run_overrides(synth_root: Path, log_dir: Path) -> list[str]:
    """A few seconds per run: 64 px synthetic portraits, one epoch, nothing drawn or downloaded."""
    return [
        f"paths.log_dir={log_dir}", f"data.root={synth_root}",
        *(f"data.synthetic.{k}={v}" for k, v in SYNTH.items()),
        "data.image_size=64", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        "module.num_log_images=0", "trainer.enable_model_summary=false", "logger=csv",
    ]


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


# ---------------------------------------------------------------------------------- summarize


def fake_run(root: Path, name: str, overrides: list[str], metrics_json: dict | None = None,
             csv_rows: list[dict] | None = None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics_json is not None:
        (run / "metrics.json").write_text(json.dumps(metrics_json))
    if csv_rows is not None:
        (run / "csv").mkdir()
        with (run / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in csv_rows for k in r}))
            writer.writeheader()
            writer.writerows(csv_rows)
    return run


def test_summarize_sorts_runs_and_writes_table_and_plot(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    fake_run(sweep_dir, "0", ["model=a", "optimizer.lr=0.001", "seed=1"],
             {"monitor": "val/f1_overall", "best_score": 0.6, "epochs": 3,
              "metrics": {"val/f1_overall": 0.5, "val/miou": 0.4, "val/loss": 1.0}})
    # no metrics.json: read from the CSV logger (best = max over epochs, last values otherwise)
    fake_run(sweep_dir, "1", ["model=b", "optimizer.lr=0.001", "seed=1"], csv_rows=[
        {"epoch": 0, "step": 9, "val/f1_overall": 0.7, "val/miou": 0.3, "val/loss": 0.9},
        {"epoch": 1, "step": 19, "val/f1_overall": 0.65, "val/miou": 0.35, "val/loss": 0.8},
    ])
    fake_run(sweep_dir, "2", ["model=c", "optimizer.lr=0.001", "seed=1"])  # crashed: no metrics
    fake_run(sweep_dir, "3", ["model=d", "optimizer.lr=0.001", "seed=1"],
             {"monitor": "val/f1_overall", "best_score": None, "metrics": {"val/f1_overall": None}})

    summary = sweep.summarize(sweep_dir)
    assert [r.path.name for r in summary.runs] == ["1", "0", "2", "3"]
    assert summary.varying == ["model"]
    assert summary.fixed == {"optimizer.lr": "0.001", "seed": "1"}
    assert summary.runs[0].score("val/f1_overall") == pytest.approx(0.7)
    assert summary.runs[0].epochs == 2
    assert summary.runs[1].score("val/f1_overall") == pytest.approx(0.6)  # best, not last
    assert summary.runs[1].metrics["val/f1_overall"] == pytest.approx(0.5)

    assert sweep.main(["summarize", str(sweep_dir)]) == 0
    md = (sweep_dir / "summary.md").read_text()
    assert "| 1 | 1 | b | 0.7000 | 0.3500 | 0.8000 | 2 |" in md
    assert "| - | 2 | c | n/a | n/a | n/a |  |" in md
    rows = list(csv.reader((sweep_dir / "summary.csv").open()))
    assert rows[0] == ["rank", "run", "model", "val/f1_overall", "val/miou", "val/loss", "epochs"]
    assert [r[1] for r in rows[1:]] == ["1", "0", "2", "3"]
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    minimized = sweep.summarize(sweep_dir, metric="val/loss", maximize=False)
    assert [r.path.name for r in minimized.runs][:2] == ["1", "0"]


def test_summarize_errors_name_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["summarize", str(tmp_path / "missing")]) == 2
    assert "no such multirun directory" in capsys.readouterr().err
    assert sweep.main(["summarize", str(tmp_path)]) == 2
    assert "no runs found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- optuna


def test_optuna_search_config_composes() -> None:
    cfg = compose_train(["hparams_search=optuna", "hydra.sweeper.storage=sqlite:///x.db"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/f1_overall"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is not None
    assert sweeper.study_name == "train" and cfg.hydra.mode.name == "MULTIRUN"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size", "model",
                                   "data.augment.rotate", "data.augment.shift", "data.augment.color"}
    # every swept key exists in the composed config (model is a config group)
    for key in sweeper.params:
        assert key == "model" or OmegaConf.select(cfg, key) is not None, key
    hydra_config = HydraConfig.instance()
    hydra_config.set_config(cfg)  # as in a job: ${hydra:sweeper.storage} resolves
    try:
        callback = instantiate(cfg.callbacks.optuna_pruning)
    finally:
        hydra_config.cfg = None
    assert isinstance(callback, OptunaPruning) and not callback.enabled
    assert callback.storage == "sqlite:///x.db" and callback.study_name == "train"


def fake_trainer(score: float, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=True, sanity_checking=False, current_epoch=epoch,
                           callback_metrics={"val/f1_overall": torch.tensor(score)}, should_stop=False,
                           strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))


def test_pruning_callback_reports_to_its_trial_and_prunes(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(3):  # finished trials at 0.9 in epochs 0 and 1
        trial = study.ask()
        trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        trial.report(0.9, step=0)
        trial.report(0.9, step=1)
        study.tell(trial, 0.9)
    good, bad = study.ask(), study.ask()  # two trials running at once
    overrides = {}
    for trial in (good, bad):
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        model = trial.suggest_categorical("model", ["fcn_resnet18", "fcn_mobilenet_v2"])
        overrides[trial.number] = [f"optimizer.lr={lr}", f"model={model}", "hparams_search=optuna"]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)

    for trial, score, pruned in ((good, 0.95, False), (bad, 0.1, True)):
        callback = OptunaPruning(storage, "s", pruner=pruner, overrides=overrides[trial.number])
        trainer = fake_trainer(score, epoch=1)
        callback.setup(trainer, None, "fit")
        assert callback.trial is not None and callback.trial.number == trial.number
        callback.on_validation_end(trainer, None)
        assert trainer.should_stop is pruned
        assert callback.pruned_at_epoch == (1 if pruned else None)

    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert trials[good.number].intermediate_values == {1: pytest.approx(0.95)}
    assert trials[bad.number].intermediate_values == {1: pytest.approx(0.1)}
    assert trials[bad.number].user_attrs["pruned_at_epoch"] == 1
    assert "pruned_at_epoch" not in trials[good.number].user_attrs
    # the sweeper, not the job, tells the study the final value
    assert trials[bad.number].state == optuna.trial.TrialState.RUNNING


def test_pruning_callback_without_storage_is_inert(caplog: pytest.LogCaptureFixture) -> None:
    callback = OptunaPruning(storage=None, study_name="s")
    trainer = fake_trainer(0.0)
    callback.setup(trainer, None, "fit")
    callback.on_validation_end(trainer, None)
    assert callback.trial is None and not trainer.should_stop
    assert "hydra.sweeper.storage" in caplog.text


@pytest.mark.slow
def test_optuna_sweep_two_trials_end_to_end(tmp_path: Path, synth_root: Path) -> None:
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep_dir = tmp_path / "optuna"
    run_train(["hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
               "hydra.sweeper.study_name=test", "callbacks.optuna_pruning.enabled=true",
               f"hydra.sweep.dir={sweep_dir}", *tiny_run_overrides(synth_root, tmp_path / "outputs")],
              cwd=tmp_path)
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and 0.0 <= result["best_value"] <= 1.0
    trials = optuna.load_study(study_name="test", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:  # the pruning callback found each job's trial and reported epoch 0
        assert set(t.intermediate_values) == {0}
    returned = sorted(t.value for t in trials)

    summary = sweep.summarize(sweep_dir)
    assert len(summary.runs) == 2
    assert {"optimizer.lr", "model"} <= set(summary.varying) | set(summary.fixed)
    # the table ranks by the best value over the run; the sweeper got the last (one epoch: same)
    assert sorted(r.metrics["val/f1_overall"] for r in summary.runs) == pytest.approx(returned)
    paths = sweep.write_summary(summary)
    assert "optimization_results.yaml" in paths["markdown"].read_text()


@pytest.mark.slow
def test_grid_multirun_2x2_and_summary(tmp_path: Path, synth_root: Path) -> None:
    sweep_dir = tmp_path / "grid"
    run_train(["-m", "model=fcn_resnet18,fcn_mobilenet_v2", "optimizer.lr=1e-3,3e-4",
               f"hydra.sweep.dir={sweep_dir}", *tiny_run_overrides(synth_root, tmp_path / "outputs")],
              cwd=tmp_path)
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == ["0", "1", "2", "3"]
    for run in runs:
        data = json.loads((sweep_dir / run / "metrics.json").read_text())
        assert data["epochs"] == 1 and data["world_size"] == 1
        assert Path(data["best_checkpoint"]).is_file() and Path(data["last_checkpoint"]).is_file()
        assert 0.0 <= data["metrics"]["val/f1_overall"] <= 1.0

    proc = subprocess.run([sys.executable, "-m", "portraitseg.sweep", "summarize", str(sweep_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert {(r["model"], float(r["optimizer.lr"])) for r in rows} == {
        (model, lr) for model in ("fcn_resnet18", "fcn_mobilenet_v2") for lr in (1e-3, 3e-4)}
    scores = [float(r["val/f1_overall"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert (sweep_dir / "summary.png").stat().st_size > 0
    assert "| model | optimizer.lr |" in proc.stdout


# -------------------------------------------------------------------------------------- wandb


def wandb_agent_command(sweep_cfg: dict, values: dict) -> list[str]:
    """The command a wandb agent runs for one set of parameter values (wandb's own helpers)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [sweep_cfg["program"]]}
    command = []
    for chunk in create_sweep_command(list(sweep_cfg["command"])):
        chunk = str(chunk)
        command += macros[chunk[2:-1]] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return command


def test_wandb_sweep_arguments_compose_in_hydra() -> None:
    sweep_cfg = yaml.safe_load((REPO / "experiments" / "wandb_sweep.yaml").read_text())
    assert sweep_cfg["metric"] == {"name": "val/f1_overall", "goal": "maximize"}
    assert "${args_no_hyphens}" in sweep_cfg["command"]
    for pick in (0, -1):  # the lowest and the highest value of every parameter
        values = {}
        for key, spec in sweep_cfg["parameters"].items():
            values[key] = spec["values"][pick] if "values" in spec else spec["min" if pick == 0 else "max"]
        command = wandb_agent_command(sweep_cfg, values)
        assert command[:3] == ["/usr/bin/env", "python", "train.py"]
        cfg = compose_train(command[3:], hydra=False)
        assert cfg.logger.wandb._target_.endswith("WandbLogger") and cfg.logger.wandb.offline is False
        for key, value in values.items():
            if key == "model":
                assert compose_train([f"model={value}"], hydra=False).model == cfg.model
            else:
                assert OmegaConf.select(cfg, key) == pytest.approx(value), key


# --------------------------------------------------------------------------------------- SLURM


def test_slurm_launcher_composes_to_an_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                         "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}",
                         "hydra.launcher.setup=[source .venv/bin/activate]"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    # what SlurmLauncher.launch() hands to submitit, short of submitting: submitit only needs
    # an `srun` on PATH to build the sbatch script
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "id")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=240"):
        assert f"#SBATCH {line}\n" in script
    assert "source .venv/bin/activate" in script and str(tmp_path / ".submitit") in script


def test_slurm_launcher_with_an_optuna_search_composes() -> None:
    cfg = compose_train(["hparams_search=optuna", "hydra/launcher=slurm", "hydra.sweeper.n_jobs=8"])
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.sweeper.n_jobs == 8


# --------------------------------------------------------------------------------- experiments


@pytest.mark.parametrize("name", ["helen_fcn_resnet50", "demo", "helen_cpu"])
def test_experiment_configs_compose(name: str) -> None:
    cfg = compose_train([f"experiment={name}"])
    assert cfg.task_name == name
    OmegaConf.to_container(cfg.model, resolve=True)
    OmegaConf.to_container(cfg.data, resolve=True)


def test_helen_fcn_resnet50_is_the_paper_recipe() -> None:
    from portraitseg.cli.train import build_module

    cfg = compose_train(["experiment=helen_fcn_resnet50"])
    model = cfg.model
    assert (model.arch, model.encoder_name, model.encoder_weights) == ("tv_fcn", "resnet50", "coco")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.trainer.accelerator == "gpu"
    assert cfg.loss.class_weights is None and cfg.loss.label_smoothing == 0.0
    assert cfg.data.layout == "auto" and cfg.data.root.endswith("/helen")
    # the same network without the download builds and segments
    offline = compose_train(["experiment=helen_fcn_resnet50", "model.encoder_weights=null"], hydra=False)
    module = build_module(offline).eval()
    with torch.no_grad():
        assert module(torch.rand(1, 3, 64, 64)).shape == (1, 11, 64, 64)
