"""Every script under ``experiments/`` runs: each in its smallest setting, in a fresh process, as
its docstring or results.md states the command (tiny sizes, one repeat, outputs in a temporary
folder, never over the recorded results).

To add a script: add one ``Script(...)`` row to ``SCRIPTS`` below (path under experiments/, the
arguments of its smallest setting, the ../shared/data folders it reads, ``slow=True`` past ~20 s).
``test_every_script_has_a_row`` fails for a script without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SHARED = Path(os.environ.get("PORTRAITSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class Script:
    """One experiment script and its smallest setting.

    ``args`` (and ``env``) may name ``{out}``, a fresh temporary folder, and the session fixtures
    below (``{tiny_run}``, ``{mixed_run}``, ``{mixed_eval}``): outputs of other rows that a script
    reads. ``fixture``: the row is run by that fixture, once, because other rows read its output.
    """

    path: str
    args: str = ""
    env: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()
    slow: bool = False
    fixture: str | None = None


#: the two-output recipe of experiments/person_mixed shrunk to seconds: 4 samples of 64 px, 1 epoch
TINY_MIXED = ("data.epoch_size=4 trainer.max_epochs=1 model.encoder_name=tu-mobilenetv3_small_050 "
              "model.encoder_weights=null data.image_size=64 data.batch_size=2 data.num_workers=0 "
              "trainer.limit_val_batches=1 trainer.num_sanity_val_steps=0 module.num_log_images=0")
MIXED_DATA = ("helenstar", "ccp_person")
#: experiments/helen_parse's arms shrunk to seconds (the fine-tuning arms start from the bundled model,
#: so they keep its encoder)
TINY_HELEN = ("trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1 "
              "trainer.num_sanity_val_steps=0 data.image_size=64 data.batch_size=2 data.num_workers=0 "
              "module.num_log_images=0")
#: experiments/demo's two arms shrunk to one step each on 8 synthetic 64 px portraits of their own
TINY_DEMO = ("trainer.max_epochs=1 trainer.limit_train_batches=1 trainer.limit_val_batches=1 "
             "trainer.num_sanity_val_steps=0 data.synthetic.n=8 data.synthetic.size=64 data.image_size=64 "
             "data.batch_size=2 paths.data_dir={out}/data")

SCRIPTS = [
    Script("bench_data/bench.py", "--sizes 64 --workers 0 --epochs 1 --steps 2 --out {out}/results.json",
           needs=("helenstar",), slow=True),
    Script("bench_pipeline/bench.py",
           "--sizes 640x480 --runs 1 --threads 1 --no-rss --arms pipeline opencv --out {out}/results.json",
           slow=True),
    Script("bench_pipeline/ablation_pass2.py", "--limit 2 --scales 1 2 --threads 1 --out {out}/ablation.json",
           needs=("helenstar",), slow=True),
    Script("bench_render_path/bench.py", "--runs 1 --folder-size 2 --rows photo_1mp --out {out}/results.json",
           slow=True),
    Script("bench_train_step/bench.py",
           "--size 64 --steps 4 --repeats 1 --models resnet18 --threads 1 --out {out}/results.json",
           slow=True),
    Script("demo/run.sh", env=(("OUT", "{out}/demo"), ("EXTRA", TINY_DEMO)), slow=True),
    Script("face_finding/bench.py", "--quick --threads 1 --out {out}/results.json",
           needs=("helenstar", "ccp_person"), slow=True),
    Script("face_finding/calibrate.py", "--n 4 --out {out}/calibration.json", needs=("helenstar",),
           slow=True),
    Script("face_finding/speed.py", "--sizes 256x192 --runs 1 --threads 1 --out {out}/speed.json"),
    Script("helen_parse/ablation.sh",
           env=(("ARMS", "plain ft_plain"), ("EXTRA", TINY_HELEN + " paths.log_dir={out}")),
           needs=MIXED_DATA, slow=True),
    Script("helen_cpu/report.py", "{tiny_run} --out {out}", slow=True),
    Script("main_subjects/bench.py", "--crowd 1 --pairs 1 --ratios 0.6 --pool 8 --threads 1 "
           "--out {out}/results.json", needs=("ccp_person",), slow=True),
    Script("output_writer/bench.py", "--runs 1 --files 5 --dir {out}", slow=True),
    Script("person/bench_person.py", "quality --n 2 --size 128 --out-dir {out}"),
    Script("person/export_person_masks.py", "--out {out}/masks --n 4 --size 64"),
    Script("person_mixed/ablation.sh", env=(("ARMS", "ce"), ("EXTRA", TINY_MIXED + " paths.log_dir={out}")),
           needs=MIXED_DATA, slow=True, fixture="mixed_run"),
    Script("person_mixed/evaluate.py", "--ckpt {mixed_run}/checkpoints/last.ckpt --name tiny --limit 2 "
           "--size 64 --no-tta --out {out}/eval.json", needs=MIXED_DATA, slow=True, fixture="mixed_eval"),
    Script("person_mixed/report.py", "--run tiny={mixed_run} --eval {mixed_eval} --name smoke --out {out}",
           needs=MIXED_DATA, slow=True),
    Script("render_quality/evaluate.py",
           "--n 2 --size 128 --threads 1 --out {out}/results.json --figure {out}/crops.png", slow=True),
    Script("render_speed/bench.py",
           "--sizes 256x192 --runs 1 --threads 1 --skip memory --out {out}/results.json", slow=True),
    Script("serve_load/bench.py", "--requests 4 --clients 2 --warm 2 --size 160x120 --timeout 1 --threads 1 "
           "--out {out}/results.json", slow=True),
    Script("startup/bench.py", "--runs 1", slow=True),
    Script("video/bench.py", "--frames 4 --size 160x96 --speed-size 160x96 --speed-frames 2 --speed-runs 1 "
           "--out {out}/results.json --strip {out}/strip.png", needs=("ccp_person",)),
]
BY_PATH = {script.path: script for script in SCRIPTS}


def _fill(text: str, request: pytest.FixtureRequest, out: Path) -> str:
    """``text`` with ``{out}`` and ``{<fixture>}`` replaced by their paths."""
    return re.sub(r"\{(\w+)\}", lambda m: str(out if m[1] == "out" else request.getfixturevalue(m[1])), text)


def run_script(script: Script, request: pytest.FixtureRequest, out: Path) -> Path:
    """Run ``script`` in its smallest setting with outputs under ``out``; fails with its output."""
    missing = [name for name in script.needs if not (SHARED / name).is_dir()]
    if missing:
        pytest.skip(f"{script.path} needs {', '.join(missing)} under {SHARED} (set PORTRAITSEG_SHARED_DATA)")
    out.mkdir(parents=True, exist_ok=True)
    path = EXPERIMENTS / script.path
    command = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    command += _fill(script.args, request, out).split()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVAL_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "PY": sys.executable, **{k: _fill(v, request, out) for k, v in script.env}}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"{' '.join(command)} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of conftest's tiny training run with the CSV logger."""
    root = tmp_path_factory.mktemp("tiny_run")
    command = [sys.executable, str(REPO / "train.py"), *TINY, "logger=csv", f"paths.root_dir={root}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (root / "outputs" / "train" / "runs").iterdir()
    return run


@pytest.fixture(scope="session")
def mixed_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of person_mixed/ablation.sh's tiny ``ce`` arm."""
    out = run_script(BY_PATH["person_mixed/ablation.sh"], request, tmp_path_factory.mktemp("mixed_run"))
    (run,) = (out / "ablation_ce" / "runs").iterdir()
    return run


@pytest.fixture(scope="session")
def mixed_eval(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """person_mixed/evaluate.py's results JSON for the tiny ``ce`` arm."""
    out = run_script(BY_PATH["person_mixed/evaluate.py"], request, tmp_path_factory.mktemp("mixed_eval"))
    return out / "eval.json"


@pytest.mark.parametrize("script", [pytest.param(s, id=s.path, marks=[pytest.mark.slow] if s.slow else [])
                                    for s in SCRIPTS])
def test_script_runs(script: Script, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if script.fixture:  # run once by its fixture, whose output other rows read
        out = request.getfixturevalue(script.fixture)
    else:
        out = run_script(script, request, tmp_path)
    if "--out" in script.args:  # results files or folders (--dir of a benchmark is scratch space)
        assert out.exists() and (out.is_file() or any(out.iterdir())), f"{script.path} wrote nothing"


def experiment_scripts() -> set[str]:
    """The scripts under experiments/ that git tracks (every one there is, outside a git checkout)."""
    listed = subprocess.run(["git", "ls-files", "experiments"], cwd=REPO, capture_output=True, text=True)
    paths = ([REPO / name for name in listed.stdout.split()] if listed.returncode == 0
             else list(EXPERIMENTS.rglob("*")))
    return {p.relative_to(EXPERIMENTS).as_posix() for p in paths
            if p.suffix in (".py", ".sh") and p.is_file()}


def test_every_script_has_a_row() -> None:
    scripts = experiment_scripts()
    missing = sorted(scripts - set(BY_PATH))
    assert not missing, f"add a Script(...) row for each to SCRIPTS in {Path(__file__).name}: {missing}"
    assert not set(BY_PATH) - scripts, "rows for scripts that are gone"
    assert len(BY_PATH) == len(SCRIPTS), "one row per script"
