"""DDP under Hydra: every rank runs the same job in one run directory; only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from portraitseg.cli.train import ddp_child_args, hydra_quote, launch_args
from portraitseg.data.synthetic import ensure_synthetic

REPO = Path(__file__).resolve().parents[1]
SYNTH = {"n": 10, "seed": 0, "size": 64}


def parsed_value(override: str) -> object:
    return OverridesParser.create().parse_override(override).value()


@pytest.mark.parametrize("path", ["/tmp/runs/2026-01-01_00-00-00", "/tmp/a b/c,d=e/it's", "C:\\runs\\"])
def test_hydra_quote_survives_the_override_grammar(path: str) -> None:
    assert parsed_value(f"hydra.run.dir={hydra_quote(path)}") == path


def test_ddp_child_replays_exactly_this_job() -> None:
    argv = ["-m", "--config-name", "train", "-cd=/etc/conf", "model=fcn_resnet18,fcn_mobilenet_v2"]
    task = ["model=fcn_mobilenet_v2", "trainer=ddp"]
    hydra_overrides = ["hydra.mode=MULTIRUN", "hydra.job.chdir=false", "hydra/launcher=slurm",
                       "hydra.sweep.dir=/x", "hydra.run.dir=/y", "hydra.sweeper.n_trials=3"]
    args = ddp_child_args(argv, task, hydra_overrides, "/out/multiruns/t/1")
    assert args == ["--config-name", "train", "-cd=/etc/conf", "model=fcn_mobilenet_v2", "trainer=ddp",
                    "hydra.job.chdir=false", "hydra.run.dir='/out/multiruns/t/1'", "hydra.mode=RUN",
                    "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    # and Hydra composes it: the child's run directory is the parent's job directory
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=args[3:], return_hydra_config=True)
    assert cfg.hydra.run.dir == "/out/multiruns/t/1" and cfg.hydra.output_subdir is None
    assert cfg.model.encoder_name == "mobilenet_v2" and cfg.trainer.strategy == "ddp"


def test_launch_args_lightning_child_takes_the_parents_job() -> None:
    env = {"PORTRAITSEG_DDP_ARGS": json.dumps(["seed=1", "hydra.run.dir='/r'"]),
           "PORTRAITSEG_DDP_PARENT": "123", "LOCAL_RANK": "1"}
    lightning_argv = ["-m", "seed=1,2", 'hydra.run.dir="/wrong"', "hydra.job.name=train_ddp_process_1"]
    assert launch_args(lightning_argv, env, parent_pid=123) == ["seed=1", "hydra.run.dir='/r'"]
    # not our parent (e.g. a variable left in a shell): untouched
    assert launch_args(["seed=3"], env, parent_pid=999) == ["seed=3"]
    assert launch_args(["seed=3"], {**env, "LOCAL_RANK": "0"}, parent_pid=123) == ["seed=3"]


def test_launch_args_torchrun_and_srun_share_one_directory(capsys: pytest.CaptureFixture) -> None:
    shared = "hydra.run.dir=${paths.log_dir}/${task_name}/runs/torchrun-abc"
    quiet = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    torchrun = {"TORCHELASTIC_RUN_ID": "abc", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}
    assert launch_args(["seed=1"], {**torchrun, "RANK": "0"}, 1) == ["seed=1", shared]
    assert launch_args(["seed=1"], {**torchrun, "RANK": "1"}, 1) == ["seed=1", shared, *quiet]
    mine = ["hydra.run.dir=/mine"]
    assert launch_args(mine, {**torchrun, "RANK": "1"}, 1) == [*mine, *quiet]
    assert launch_args([], {**torchrun, "RANK": "0", "TORCHELASTIC_RUN_ID": "none"}, 1) == []
    assert "hydra.run.dir" in capsys.readouterr().err
    srun = {"SLURM_NTASKS": "8", "SLURM_PROCID": "3", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}
    assert launch_args(["seed=1"], srun, 1) == [
        "seed=1", "hydra.run.dir=${paths.log_dir}/${task_name}/runs/slurm-77.0", *quiet]
    assert launch_args(["seed=1"], {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 1) == ["seed=1"]
    assert launch_args(["seed=1"], {}, 1) == ["seed=1"]
    # the directory override composes
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("train", overrides=[shared, "paths.log_dir=/logs"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "/logs/train/runs/torchrun-abc"


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_cpu_processes_one_run_directory(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "synthetic", **SYNTH)
    log_dir = tmp_path / "outputs"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    args = [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        # SyncBatchNorm needs CUDA; gloo is Lightning's backend on CPU
        "trainer.sync_batchnorm=false", f"paths.log_dir={log_dir}", f"data.root={root}",
        *(f"data.synthetic.{k}={v}" for k, v in SYNTH.items()), "data.image_size=64", "data.batch_size=2",
        "trainer.max_epochs=1", "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
        "logger=csv",
    ]
    # a session of its own: a hung rank is killed with its parent
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("2-process DDP run hung (killed after 400 s):\n" + out[-6000:])
    assert proc.returncode == 0, out[-6000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out

    runs = [p for p in (log_dir / "train" / "runs").iterdir()]
    assert len(runs) == 1, runs  # rank 1 made no directory of its own
    run = runs[0]
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
                     "checkpoints/epoch000.ckpt", "checkpoints/last.ckpt", "csv/hparams.yaml",
                     "csv/images/val_epoch000.png", "csv/metrics.csv", "metrics.json", "train.log"]
    assert not list(log_dir.rglob("train_ddp_process_*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 1
    # 7 training images over 2 ranks in batches of 2: 2 steps each (a rank alone would take 3)
    assert metrics["global_step"] == 2
    assert 0.0 <= metrics["metrics"]["val/f1_overall"] <= 1.0
    log = (run / "train.log").read_text()
    assert log.count("metrics: ") == 1 and "val/f1_overall=" in log  # reported once, by rank 0
