# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, then train on the synthetic data and render a portrait
#   make test   create .venv, install, then run the test suite
# Both are idempotent: the install re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
# torch/torchvision are installed first as an explicit pair: on the project's build machines
# (CPU, Python 3.11, pip capped at torch<=2.14.1) only this pair works together; the CPU-only
# torch 2.13 wheel on disk breaks torchvision and with it smp, timm, lightning, torchmetrics.
# Elsewhere override it, e.g. make test TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
SERVE_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint serve clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,sweep]"
	touch $@

demo: $(STAMP)
	$(PY) -m portraitseg.data synth --root data/synthetic --n 64 --seed 0 --size 128
	$(PY) -m portraitseg.data check data/synthetic
	$(PY) train.py experiment=demo
	$(PY) -m portraitseg.cli.main render data/synthetic/train/images/synth_0000.png -o outputs/demo/portraits --ckpt "$$(ls -t outputs/demo/runs/*/checkpoints/last.ckpt | head -1)" --stages --overwrite
	@echo "portrait of the synthetic face written to outputs/demo/portraits/"
	$(PY) -c "import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save('outputs/demo/astronaut.png')"
	$(PY) -m portraitseg.cli.main render outputs/demo/astronaut.png -o outputs/demo/portraits --stages --save-alpha --overwrite
	@echo "the bundled model's portrait of a real photo (scikit-image's public-domain astronaut):"
	@echo "  portrait:       outputs/demo/portraits/astronaut_portrait.png"
	@echo "  stages figure:  outputs/demo/portraits/astronaut_stages.jpg"
	@echo "  subject alpha:  outputs/demo/portraits/astronaut_alpha.png"

test: $(STAMP)
	$(PY) -m pytest -q --timeout=900 $(PYTEST_ARGS)

# the web page and HTTP API on http://127.0.0.1:8750/ (Ctrl-C stops); e.g. SERVE_ARGS="--port 9000"
serve: $(STAMP)
	$(PY) -m portraitseg.cli.main serve $(SERVE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean-outputs:
	rm -rf outputs multirun
