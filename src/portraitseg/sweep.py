"""Hyperparameter sweeps: summarize a Hydra multirun.

``python -m portraitseg.sweep summarize <multirun dir>`` reads every run of a sweep (a grid
``python train.py -m a=1,2 b=3,4`` or ``hparams_search=optuna``): its overrides
(``<run>/.hydra/overrides.yaml``) and its final metrics (``<run>/metrics.json`` written by
``train.py``, else the last rows of the CSV logger's ``metrics.csv``), and writes one table sorted
by the objective, best first: ``summary.md``, ``summary.csv`` and ``summary.png`` (the objective
per run) into the multirun directory.

Pruning Optuna trials from inside a run is :class:`portraitseg.lit.pruning.OptunaPruning`, the
Lightning callback behind ``callbacks.optuna_pruning.enabled=true`` of ``hparams_search=optuna``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from portraitseg.io import atomic_write, write_figure

log = logging.getLogger(__name__)

DEFAULT_METRIC = "val/f1_overall"
DEFAULT_EXTRA = ("val/miou", "val/loss")
OUTPUT_NAMES = ("summary.md", "summary.csv", "summary.png")


# --------------------------------------------------------------------------------------------
# Reading a multirun


@dataclass
class Run:
    """One job of a sweep.

    Attributes:
        path: the job's output directory.
        overrides: ``key -> value`` from ``.hydra/overrides.yaml`` (as typed on the command line).
        metrics: final value of every metric (``None`` where it was NaN).
        best: best value of the objective over the run (checkpoint callback), if known.
        monitor: the metric ``best`` refers to.
        epochs: epochs trained, if known.
    """

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float | None] = field(default_factory=dict)
    best: float | None = None
    monitor: str | None = None
    epochs: int | None = None

    def score(self, metric: str) -> float | None:
        """The run's value of ``metric``: its best over the run where recorded, else its last."""
        if self.best is not None and self.monitor == metric:
            return self.best
        return self.metrics.get(metric)


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_overrides(path: Path) -> dict[str, str]:
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of overrides, got {type(items).__name__}")
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _csv_metrics(run_dir: Path, metric: str) -> tuple[dict[str, float | None], float | None, int | None]:
    """Last value of every column, the best (max) ``metric`` and the epochs, from metrics.csv."""
    files = sorted(run_dir.rglob("metrics.csv"))
    if not files:
        return {}, None, None
    last: dict[str, float | None] = {}
    series: list[float] = []
    epoch = None
    with files[0].open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and value not in (None, ""):
                    last[key] = _num(value)
            if row.get(metric) not in (None, ""):
                value = _num(row[metric])
                if value is not None:
                    series.append(value)
            if row.get("epoch") not in (None, ""):
                epoch = int(float(row["epoch"]))
    for key in ("epoch", "step"):
        last.pop(key, None)
    return last, (max(series) if series else None), (epoch + 1 if epoch is not None else None)


def read_run(run_dir: Path, metric: str = DEFAULT_METRIC) -> Run:
    """Overrides and final metrics of one job directory (one holding ``.hydra/overrides.yaml``)."""
    run = Run(path=run_dir, overrides=_parse_overrides(run_dir / ".hydra" / "overrides.yaml"))
    summary = run_dir / "metrics.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        run.metrics = {k: _num(v) for k, v in (data.get("metrics") or {}).items()}
        run.best = _num(data.get("best_score"))
        run.monitor = data.get("monitor")
        run.epochs = data.get("epochs")
    else:
        run.metrics, run.best, run.epochs = _csv_metrics(run_dir, metric)
        run.monitor = metric
    return run


def find_runs(sweep_dir: str | Path, metric: str = DEFAULT_METRIC) -> list[Run]:
    """Every job under ``sweep_dir`` (any depth of ``hydra.sweep.subdir``), in path order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such multirun directory")
    runs = [read_run(p.parent.parent, metric) for p in sorted(sweep_dir.rglob(".hydra/overrides.yaml"))]
    if not runs:
        raise FileNotFoundError(
            f"{sweep_dir}: no runs found (no */.hydra/overrides.yaml); pass the directory a "
            "`python train.py -m ...` printed as its sweep output dir")
    return runs


# --------------------------------------------------------------------------------------------
# The table


@dataclass
class Summary:
    """A sweep's runs sorted by ``metric`` (best first, runs without it last)."""

    sweep_dir: Path
    metric: str
    runs: list[Run]
    varying: list[str]
    fixed: dict[str, str]
    extra: list[str]
    maximize: bool = True

    @property
    def header(self) -> list[str]:
        return ["rank", "run", *self.varying, self.metric, *self.extra, "epochs"]

    def rows(self, short: bool = False) -> list[list[str]]:
        """One row per run; ``short``: numeric overrides to 4 significant digits."""
        value = _short if short else str
        out = []
        for i, run in enumerate(self.runs, 1):
            score = run.score(self.metric)
            out.append([
                str(i) if score is not None else "-",
                str(run.path.relative_to(self.sweep_dir)) if run.path != self.sweep_dir else ".",
                *(value(run.overrides.get(k, "")) for k in self.varying),
                _fmt(score),
                *(_fmt(run.metrics.get(k)) for k in self.extra),
                "" if run.epochs is None else str(run.epochs),
            ])
        return out


def _short(value: str) -> str:
    """A float-looking override value with 4 significant digits; anything else as is."""
    if not any(c in value for c in ".eE") or value.lower() in ("true", "false", "none", "null"):
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summarize(sweep_dir: str | Path, metric: str = DEFAULT_METRIC,
              extra: Sequence[str] = DEFAULT_EXTRA, maximize: bool = True) -> Summary:
    """Collect the runs of ``sweep_dir`` into a :class:`Summary` sorted by ``metric``."""
    sweep_dir = Path(sweep_dir)
    runs = find_runs(sweep_dir, metric)
    keys = sorted({k for r in runs for k in r.overrides})
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    fixed = {k: runs[0].overrides[k] for k in keys if k not in varying}
    sign = -1.0 if maximize else 1.0

    def order(run: Run) -> tuple[int, float]:
        score = run.score(metric)
        return (1, 0.0) if score is None else (0, sign * score)

    runs.sort(key=order)
    extra = [m for m in extra if m != metric]
    return Summary(sweep_dir, metric, runs, varying, fixed, extra, maximize)


def to_markdown(summary: Summary) -> str:
    """The summary as a markdown table, preceded by the overrides every run shares."""
    lines = [f"# Sweep {summary.sweep_dir}", ""]
    if summary.fixed:
        lines += ["Shared overrides: " + " ".join(f"`{k}={v}`" for k, v in summary.fixed.items()), ""]
    n_ok = sum(r.score(summary.metric) is not None for r in summary.runs)
    lines += [f"{len(summary.runs)} runs ({n_ok} with `{summary.metric}`), sorted by "
              f"`{summary.metric}` ({'max' if summary.maximize else 'min'}; best over the run "
              "where the checkpoint callback recorded it, else the last value).", ""]
    header = summary.header
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if h in ("rank", "epochs", summary.metric, *summary.extra)
                               else "---" for h in header) + "|")
    for row in summary.rows(short=True):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    optuna_result = summary.sweep_dir / "optimization_results.yaml"
    if optuna_result.is_file():
        lines += ["", "Optuna's result (`optimization_results.yaml`):", "", "```yaml",
                  optuna_result.read_text().strip(), "```"]
    return "\n".join(lines) + "\n"


def to_csv(summary: Summary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(summary.header)
    writer.writerows(summary.rows())
    return buf.getvalue()


def plot(summary: Summary, path: str | Path) -> Path:
    """A horizontal bar per run of ``metric`` (best at the top), labelled with its overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in summary.runs if r.score(summary.metric) is not None]
    labels = [
        textwrap.fill(f"{r.path.relative_to(summary.sweep_dir)}: " + (" ".join(
            f"{k}={_short(r.overrides.get(k, ''))}" for k in summary.varying) or "-"), 70)
        for r in runs
    ]
    values = [r.score(summary.metric) for r in runs]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.25 * max(2, lines)))
    ax.barh(range(len(runs)), values, color="#4c72b0")
    ax.set_yticks(range(len(runs)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel(summary.metric)
    ax.set_title(f"{summary.sweep_dir.name}: {len(runs)} of {len(summary.runs)} runs")
    if values:
        ax.set_xlim(0, max(values) * 1.15 or 1.0)
    path = Path(path)
    write_figure(path, fig, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary(summary: Summary, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv`` and ``summary.png`` (default: into the sweep dir)."""
    out = Path(out_dir) if out_dir else summary.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, png = (out / name for name in OUTPUT_NAMES)
    atomic_write(md, to_markdown(summary).encode("utf-8"))
    atomic_write(csv_path, to_csv(summary).encode("utf-8"))
    plot(summary, png)
    return {"markdown": md, "csv": csv_path, "plot": png}


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m portraitseg.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("summarize", help="one sorted table (md + csv) and a plot of a multirun",
                       description="Collect every run of a Hydra multirun directory into "
                                   "summary.md, summary.csv and summary.png.")
    p.add_argument("sweep_dir", type=Path, help="the multirun directory (outputs/<task>/multiruns/<time>)")
    p.add_argument("--metric", default=DEFAULT_METRIC, help="objective to sort by (%(default)s)")
    p.add_argument("--minimize", action="store_true", help="lower is better (e.g. val/loss)")
    p.add_argument("--extra", default=",".join(DEFAULT_EXTRA),
                   help="comma-separated metrics shown as further columns (%(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the sweep dir)")
    p.set_defaults(func=_run_summarize)
    return parser


def _run_summarize(args: argparse.Namespace) -> int:
    try:
        summary = summarize(args.sweep_dir, args.metric,
                            [m for m in args.extra.split(",") if m], maximize=not args.minimize)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = write_summary(summary, args.out)
    print(to_markdown(summary))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
