"""What a lightning-hydra-template user expects of the config tree: debug runs apart and without
checkpoints, callbacks one file each, common Trainer keys overridable without ``+``, extras and
tags, ``last.ckpt`` that does not double the disk, stale temporaries cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import TINY as TINY_RUN
from portraitseg.cli import config_dir
from portraitseg.cli.extras import ExtrasError, apply_extras
from portraitseg.cli.train import train
from portraitseg.lit.callbacks import remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
#: the tiny run of conftest, no image grids, CSV logger (the Trainer keys need no `+` any more)
TINY = [*TINY_RUN, "module.num_log_images=0", "logger=csv"]


def config(root: Path, *overrides: str, tiny: bool = True):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[*(TINY if tiny else []), f"paths.root_dir={root}",
                                           f"paths.output_dir={root / 'run'}", *overrides])


def test_callbacks_are_one_file_each_and_composable_by_name(tmp_path):
    default = config(tmp_path, tiny=False).callbacks
    assert list(default) == ["model_checkpoint", "early_stopping", "lr_monitor", "progress_bar",
                             "epoch_seeding", "nonfinite", "oom_hint"]
    chosen = config(tmp_path, "callbacks=[model_checkpoint,nonfinite]", tiny=False).callbacks
    assert list(chosen) == ["model_checkpoint", "nonfinite"]
    assert "early_stopping" not in config(tmp_path, "~callbacks.early_stopping", tiny=False).callbacks
    assert not config(tmp_path, "callbacks=none", tiny=False).callbacks
    for experiment in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        assert config(tmp_path, f"experiment={experiment}", tiny=False).callbacks.model_checkpoint


def test_common_trainer_keys_need_no_plus(tmp_path):
    cfg = config(tmp_path, "trainer.val_check_interval=0.5", "trainer.log_every_n_steps=1",
                 "trainer.precision=bf16-mixed", "trainer.overfit_batches=2", "trainer.fast_dev_run=true")
    assert cfg.trainer.limit_train_batches == 2 and cfg.trainer.val_check_interval == 0.5
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.fast_dev_run is True


@pytest.mark.parametrize("debug", ["default", "fdr", "limit", "overfit"])
def test_debug_configs_are_their_own_task_without_checkpoints(tmp_path, debug):
    cfg = config(tmp_path, f"debug={debug}", tiny=False)
    assert cfg.task_name == "debug" and cfg.callbacks.model_checkpoint is None
    assert cfg.trainer.enable_checkpointing is False and cfg.extras.enforce_tags is False


def test_debug_fdr_run_writes_no_checkpoint(tmp_path):
    train(config(tmp_path, "debug=fdr"))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_last_ckpt_links_to_the_same_step_file_else_is_the_latest_state(tmp_path):
    # one epoch: last.ckpt is the top-k file of that step -> a link, one file on disk
    train(config(tmp_path))
    ckpts = tmp_path / "run" / "checkpoints"
    last = ckpts / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "epoch000.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    # two epochs where epoch 1 is not better (monitor the epoch, lower is better): last.ckpt
    # must be epoch 1's full state, not a link to the kept epoch 0 (Lightning's own `link`)
    other = tmp_path / "other"
    train(config(other, "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=epoch",
                 "callbacks.model_checkpoint.mode=min", "callbacks.early_stopping=null"))
    ckpts = other / "run" / "checkpoints"
    assert not (ckpts / "last.ckpt").is_symlink()
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 1
    assert torch.load(ckpts / "epoch000.ckpt", weights_only=True)["epoch"] == 0
    # two epochs where epoch 1 is better: the kept file moves on and last.ckpt follows it
    better = tmp_path / "better"
    train(config(better, "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=epoch",
                 "callbacks.model_checkpoint.mode=max", "callbacks.early_stopping=null"))
    ckpts = better / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch001.ckpt", "last.ckpt"]
    assert os.readlink(ckpts / "last.ckpt") == "epoch001.ckpt"


def test_stale_temporaries_of_our_naming_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".last.ckpt.0123abcd.{dead.pid}.tmp",
             tmp_path / f".epoch003.ckpt.89abcdef.{dead.pid}.tmp"]
    alive = tmp_path / f".last.ckpt.0123abcd.{os.getpid()}.tmp"
    foreign = [tmp_path / ".notes.tmp", tmp_path / "x.123.tmp", tmp_path / ".model.onnx.12ab.tmp",
               tmp_path / f".backup.{dead.pid}.tmp", tmp_path / f".last.ckpt.{dead.pid}.tmp"]  # not ours
    for path in [*stale, alive, *foreign]:
        path.write_bytes(b"partial")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert alive.exists() and all(p.exists() for p in foreign)


def test_training_render_preset_follows_the_cli_rules(tmp_path):
    from portraitseg.cli.train import RunConfigError

    with pytest.raises(RunConfigError, match=r"render: highlights=inf is not a finite number"):
        train(config(tmp_path, "render.highlights=inf"))


def test_eval_render_preset_follows_the_cli_rules(tmp_path):
    from portraitseg.cli.eval import EvalConfigError, evaluate

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=default", "render.strength=-1",
                                         f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(EvalConfigError, match=r"render: strength=-1(\.0)? is out of range"):
        evaluate(cfg)


def test_extras_enforce_tags_and_tags_reach_metrics_json(tmp_path):
    with pytest.raises(ExtrasError, match=r"no tags: pass e.g. tags='\[baseline,helen\]'"):
        apply_extras(config(tmp_path, "tags=[]"))
    apply_extras(config(tmp_path, "tags=[]", "extras.enforce_tags=false"))
    cfg = config(tmp_path, "tags=[smoke,tiny]", "logger=wandb")
    assert list(cfg.logger.wandb.tags) == ["smoke", "tiny"]


def _train_py(root: Path, *overrides: str, tiny: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PORTRAITSEG_ROOT=str(root))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(REPO / "train.py"), *(TINY if tiny else []), *overrides],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.mark.slow
def test_train_py_user_errors_are_one_line_exit_2(tmp_path):
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, crafted)
    proc = _train_py(tmp_path, f"init_from={crafted}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: init_from={crafted}: {crafted}: cannot load this model file" in proc.stderr
    assert "Traceback" not in proc.stderr and "code ran" not in proc.stdout + proc.stderr
    proc = _train_py(tmp_path, "tags=[]")
    assert proc.returncode == 2 and "extras.enforce_tags=true but the run has no tags" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _train_py(tmp_path, "data=folder", f"data.root={tmp_path / 'nowhere'}", "logger=csv",
                     "model.encoder_name=tu-mobilenetv3_small_050", "trainer.max_epochs=1", tiny=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: dataset root {tmp_path / 'nowhere'} does not exist" in proc.stderr
    assert f"(data.root={tmp_path / 'nowhere'}: pass data.root=/path/to/the/dataset)" in proc.stderr
    assert "Traceback" not in proc.stderr
    # data=helenstar has no default root: the key is named, with what to pass
    proc = _train_py(tmp_path, "data=helenstar", tiny=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("error: data.root is not set for data=helenstar: pass data.root=/path/to/the/dataset"
            in proc.stderr)
    assert "Traceback" not in proc.stderr
    # a mixed source whose root is missing is named by its key
    proc = _train_py(tmp_path, "data=mixed", f"data.sources.helenstar.root={tmp_path / 'no_helen'}",
                     "model.encoder_name=tu-mobilenetv3_small_050", tiny=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (f"error: data.sources.helenstar.root: dataset root {tmp_path / 'no_helen'} does not exist"
            in proc.stderr)
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_eval_py_refuses_a_crafted_checkpoint_in_one_line(tmp_path):
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, crafted)
    env = dict(os.environ, OMP_NUM_THREADS="1", PORTRAITSEG_ROOT=str(tmp_path))
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), f"ckpt_path={crafted}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "crafted.ckpt: cannot load this model file" in proc.stderr and "Traceback" not in proc.stderr
    assert "code ran" not in proc.stdout + proc.stderr


def test_last_link_is_repointed_before_its_target_is_deleted(tmp_path):
    """A better epoch replaces the kept one: last.ckpt never dangles, not even between the steps."""
    from types import SimpleNamespace

    from portraitseg.lit.callbacks import AtomicModelCheckpoint

    old, new = tmp_path / "epoch000.ckpt", tmp_path / "epoch001.ckpt"
    old.write_bytes(b"epoch 0")
    new.write_bytes(b"epoch 1")
    last = tmp_path / "last.ckpt"
    last.symlink_to(old.name)
    callback = AtomicModelCheckpoint(dirpath=tmp_path, save_last="link")
    callback.last_model_path, callback.best_model_path = str(last), str(new)
    seen = []
    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(
        remove_checkpoint=lambda path: (seen.append(last.read_bytes()), os.remove(path))))
    callback._remove_checkpoint(trainer, str(old))
    assert seen == [b"epoch 1"]  # at the moment of deletion last.ckpt already pointed at epoch 1
    assert last.is_symlink() and os.readlink(last) == "epoch001.ckpt" and not old.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_eval_py_without_a_data_root_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), "ckpt_path=default", "data=helenstar"],
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: data.root is not set: pass data.root=/path/to/the/dataset" in proc.stderr
    assert "Traceback" not in proc.stderr
