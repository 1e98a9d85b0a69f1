"""DDP under Hydra: one run directory per job.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the training script with the parent's
sys.argv. Under Hydra that composes a new job: a new timestamped run directory, a second
.hydra/ and log file, and in a multirun a whole second sweep. So before fit the parent
publishes its exact job (overrides + run directory) in the environment its children inherit
(:func:`ddp_job`), and ``main()`` in a child replays it (:func:`launch_args`): same config, same
directory, and Hydra writes nothing there. Processes started by torchrun or srun get one
directory named after the launcher's job id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig

if TYPE_CHECKING:
    import lightning as L

_DDP_ARGS_ENV = "PORTRAITSEG_DDP_ARGS"
_DDP_PARENT_ENV = "PORTRAITSEG_DDP_PARENT"
#: hydra overrides a DDP child must not inherit (it runs one job in the parent's directory)
_NOT_INHERITED = ("hydra.run", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.mode",
                  "hydra.output_subdir", "hydra.job.name", "hydra/job_logging", "hydra.job_logging",
                  "hydra/hydra_logging", "hydra.hydra_logging", "hydra/launcher", "hydra.launcher")
#: command-line flags of a Hydra app that select the config (kept for DDP children)
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
#: set by Lightning's DDP launcher in the process that starts the ranks
_LAUNCHER_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: a rank > 0 only logs to the console; rank 0 writes .hydra/ and the log file
_QUIET_RANK = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (any path: spaces, ``,``, ``=``, quotes)."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _config_flags(argv: Sequence[str]) -> list[str]:
    """The ``--config-name/-cn``, ``--config-path/-cp``, ``--config-dir/-cd`` flags of ``argv``."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            kept.append(arg)
            if "=" not in arg and i + 1 < len(argv):
                kept.append(argv[i + 1])
                i += 1
        i += 1
    return kept


def ddp_child_args(argv: Sequence[str], task: Sequence[str], hydra_overrides: Sequence[str],
                   output_dir: str) -> list[str]:
    """Command-line arguments that re-run one Hydra job in ``output_dir`` as a quiet DDP rank.

    Args:
        argv: the parent's ``sys.argv[1:]`` (only its config-selection flags are kept).
        task: the job's task overrides (``hydra.overrides.task``: exactly this job, also in a sweep).
        hydra_overrides: the job's ``hydra.overrides.hydra``; those about run/sweep directories,
            mode, sweeper, logging and launcher are dropped.
        output_dir: the parent job's output directory.
    """
    inherited = [o for o in hydra_overrides if not _override_key(o).startswith(_NOT_INHERITED)]
    return [*_config_flags(argv), *task, *inherited, f"hydra.run.dir={hydra_quote(output_dir)}",
            "hydra.mode=RUN", *_QUIET_RANK]


@contextlib.contextmanager
def ddp_job(trainer: L.Trainer) -> Iterator[None]:
    """Scope of one job's fit/test in a process that may start DDP ranks.

    On entry, publishes this Hydra job for the ranks Lightning's launcher may start (read by
    :func:`launch_args` in the child). On exit, if ranks were started here, waits for them,
    closes the process group and restores the launcher's environment variables, so that the
    next job of a multirun (run in this same process) starts its own ranks.
    """
    import torch

    started_here = "LOCAL_RANK" not in os.environ
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    if started_here and HydraConfig.initialized():
        hc = HydraConfig.get()
        args = ddp_child_args(sys.argv[1:], list(hc.overrides.task), list(hc.overrides.hydra),
                              str(Path(hc.runtime.output_dir).resolve()))
        os.environ[_DDP_ARGS_ENV] = json.dumps(args)
        os.environ[_DDP_PARENT_ENV] = str(os.getpid())
    try:
        yield
    finally:
        children = getattr(getattr(trainer.strategy, "launcher", None), "procs", None)
        if started_here and children:
            for proc in children:
                proc.wait()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def launch_args(argv: Sequence[str], env: Mapping[str, str], parent_pid: int) -> list[str]:
    """``argv`` (``sys.argv[1:]``) adjusted for the DDP rank this process is, before Hydra runs.

    - A rank started by Lightning's DDP launcher from a parent that published its job
      (``PORTRAITSEG_DDP_*``): the parent's job, in the parent's run directory, quiet.
    - A rank started by torchrun (``TORCHELASTIC_RUN_ID``) or srun (``SLURM_NTASKS`` > 1): unless
      ``hydra.run.dir`` is given, every rank uses ``<log_dir>/<task_name>/runs/<launcher>-<job id>``;
      ranks > 0 write nothing there.
    - Anything else: unchanged.
    """
    if (env.get(_DDP_PARENT_ENV) == str(parent_pid) and _DDP_ARGS_ENV in env
            and int(env.get("LOCAL_RANK", "0")) > 0):
        return list(json.loads(env[_DDP_ARGS_ENV]))
    if "TORCHELASTIC_RUN_ID" in env:
        rank, run_id = int(env.get("RANK", "0")), env["TORCHELASTIC_RUN_ID"]
        run_name = None if run_id == "none" else f"torchrun-{run_id}"
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, job = int(env["SLURM_PROCID"]), env.get("SLURM_JOB_ID", "0")
        step = env.get("SLURM_STEP_ID")
        run_name = f"slurm-{job}" + (f".{step}" if step else "")
    else:
        return list(argv)
    args = list(argv)
    if not any(_override_key(a) == "hydra.run.dir" for a in args):
        if run_name:
            args.append(f"hydra.run.dir=${{paths.log_dir}}/${{task_name}}/runs/{run_name}")
        elif rank == 0:
            print("portraitseg: torchrun without --standalone or --rdzv-id gives each rank its own "
                  "run directory; pass hydra.run.dir=<dir> to share one", file=sys.stderr)
    if rank > 0:
        args += [a for a in _QUIET_RANK if a not in args]
    return args
