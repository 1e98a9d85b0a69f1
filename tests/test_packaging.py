"""Start-up and packaging: what the command-line entry points import, the user extras and their
messages, project metadata, and that .gitignore hides no tracked file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "src" / "portraitseg" / "weights" / "default.pt"

#: (what, python code run in a fresh interpreter, modules that must not have been imported)
STARTUP = [
    ("portraitseg --help",
     "from portraitseg.cli.main import main\ntry: main(['--help'])\nexcept SystemExit: pass",
     ("torch", "lightning")),
    ("render --help",
     "from portraitseg.cli.main import main\ntry: main(['render', '--help'])\nexcept SystemExit: pass",
     ("torch", "lightning")),
    ("render argument error",
     "from portraitseg.cli.main import main\n"
     "try: main(['render', 'x.jpg', '--strength', 'inf'])\nexcept SystemExit: pass",
     ("torch", "lightning")),
    ("export argument error",
     "from portraitseg.cli.main import main\n"
     "try: main(['export', '--ckpt', 'x', '--onnx', 'y', '--opset', '1'])\nexcept SystemExit: pass",
     ("torch", "lightning")),
    ("data check without a dataset",
     "from portraitseg.data.__main__ import main\nmain(['check', 'nowhere'])",
     ("torch", "lightning")),
    ("train.py module", "import portraitseg.cli.train", ("torch", "lightning")),
    ("eval.py module", "import portraitseg.cli.eval", ("torch", "lightning")),
    ("sweep summarize", "from portraitseg.sweep import main\nmain(['summarize', 'nowhere'])",
     ("torch", "lightning")),
    ("load a weights file",
     f"from portraitseg.models import load_segmenter\nload_segmenter({str(DEFAULT_MODEL)!r})",
     ("lightning", "torchmetrics", "hydra", "albumentations")),
]


@pytest.mark.parametrize(("code", "forbidden"), [s[1:] for s in STARTUP], ids=[s[0] for s in STARTUP])
def test_entry_points_import_only_what_they_need(code, forbidden):
    if "load_segmenter" in code and not DEFAULT_MODEL.is_file():
        pytest.skip("no bundled default model in this checkout")
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {list(forbidden)!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:] + proc.stderr[-2000:]


def test_user_extras_and_metadata():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("onnx") for d in extras["export"])
    assert any(d.startswith("onnxruntime") for d in extras["export"])
    assert any(d.startswith("tensorboard") for d in extras["tensorboard"])
    assert project["authors"] and project["keywords"] and project["classifiers"]


def no_tensorboard(**_: object) -> None:
    """Stands in for a logger whose package is missing (Lightning's TensorBoardLogger's error)."""
    raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available.")


def test_missing_logger_package_names_the_extra():
    from portraitseg.cli.train import RunConfigError, _instantiate_all

    section = OmegaConf.create({"tensorboard": {"_target_": "test_packaging.no_tensorboard"}})
    expected = (r"logger\.tensorboard .* needs the package 'tensorboard', which is not installed: "
                r"pip install 'portraitseg\[tensorboard\]'")
    with pytest.raises(RunConfigError, match=expected):
        _instantiate_all(section, "logger")


def test_export_without_onnx_names_the_extra(tmp_path, monkeypatch, capsys):
    from portraitseg.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    assert main(["export", "--ckpt", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'portraitseg[export]'" in capsys.readouterr().err


def test_gitignore_hides_no_tracked_file():
    proc = subprocess.run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    assert proc.stdout.strip() == "", proc.stdout
