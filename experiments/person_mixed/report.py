"""Tables and curves for experiment=person_mixed runs.

    # per-epoch validation of runs (one curve each) + the table of evaluate.py results
    python experiments/person_mixed/report.py --run ce=<run dir> --run balanced=<run dir> ... \
        --eval experiments/person_mixed/results_ablation.json --name ablation

Writes <name>_curves.png, <name>_per_epoch.md and <name>.md (final scores per run: Helen per-class
and overall F1 on HELEN* val, person IoU / boundary F / MAD on CCP val and HELEN* val).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from portraitseg.classes import CLASS_NAMES  # noqa: E402

CURVES = ("score", "helenstar/f1_overall", "ccp/person_iou", "ccp/person_boundary_f", "helenstar/person_iou")
CLASSES = CLASS_NAMES[1:]  # every Helen class but background


def val_rows(run_dir: Path) -> list[dict[str, float]]:
    """One row per validation from the CSV logger's metrics.csv."""
    path = next(run_dir.glob("**/metrics.csv"))
    with path.open() as f:
        return [
            {
                "epoch": int(r["epoch"]),
                "step": int(r["step"]) + 1,
                **{c: float(r[f"val/{c}"]) for c in CURVES if r.get(f"val/{c}")},
            }
            for r in csv.DictReader(f)
            if r.get("val/score")
        ]


def last_val(run_dir: Path) -> dict[str, str]:
    """The last validation row of a run's metrics.csv (every logged val/ key)."""
    path = next(run_dir.glob("**/metrics.csv"))
    with path.open() as f:
        return [r for r in csv.DictReader(f) if r.get("val/score")][-1]


def per_class(runs: dict[str, Path]) -> list[str]:
    """Per-class F1 on HELEN* val at each run's last validation (320 px letterbox, flip TTA)."""
    lines = ["| run | " + " | ".join(CLASSES) + " |", "|" + "---|" * (len(CLASSES) + 1)]
    for run, path in runs.items():
        row = last_val(path)
        scores = [f"{float(row[f'val/helenstar/f1/{c}']):.3f}" for c in CLASSES]
        lines.append(f"| {run} | " + " | ".join(scores) + " |")
    return lines


def curves(runs: dict[str, Path], out: Path, name: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=110)
    lines = ["| run | epoch | steps | " + " | ".join(CURVES) + " |", "|---" * (len(CURVES) + 3) + "|"]
    for run, path in runs.items():
        rows = val_rows(path)
        for r in rows:
            lines.append(
                f"| {run} | {r['epoch']} | {r['step']} | "
                + " | ".join(f"{r.get(c, float('nan')):.4f}" for c in CURVES)
                + " |"
            )
        for ax, key in zip(axes, ("score", "helenstar/f1_overall", "ccp/person_iou"), strict=True):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=run)
            ax.set_title(f"val/{key}")
            ax.set_xlabel("optimizer steps (batch 8)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}_curves.png")
    lines += ["", "Per-class F1 on HELEN* val at the last validation:", "", *per_class(runs)]
    (out / f"{name}_per_epoch.md").write_text("\n".join(lines) + "\n")


def table(results: dict, out: Path, name: str) -> None:
    head = (
        "| run | steps | Helen overall F1 | brows | eyes | nose | mouth | CCP IoU | CCP boundary F | "
        "CCP MAD | HELEN* person IoU | ms / 512 px |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run, r in results.items():
        h, c = r["helenstar"], r["ccp"]
        lines.append(
            f"| {run} | {r.get('global_step')} | {h['f1_overall']:.4f} | {h['f1_brows']:.3f} | "
            f"{h['f1_eyes']:.3f} | {h['f1_nose']:.3f} | {h['f1_mouth']:.3f} | {c['person_iou']:.4f} | "
            f"{c['person_boundary_f']:.4f} | "
            f"{c['person_mad']:.4f} | {h['person_iou']:.4f} | "
            f"{r.get('ms_512x384', float('nan')):.0f} |"
        )
    lines += [
        "",
        "Per-class F1 on HELEN* val (native 256x256, flip TTA):",
        "",
        "| run | " + " | ".join(CLASSES) + " |",
        "|" + "---|" * (len(CLASSES) + 1),
    ]
    for run, r in results.items():
        lines.append(f"| {run} | " + " | ".join(f"{r['helenstar'][f'f1/{k}']:.3f}" for k in CLASSES) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--eval", type=Path, help="results JSON of evaluate.py")
    parser.add_argument("--name", default="ablation")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    runs = dict((k, Path(v)) for k, v in (s.split("=", 1) for s in args.run))
    if runs:
        curves(runs, args.out, args.name)
    if args.eval:
        table(json.loads(args.eval.read_text()), args.out, args.name)


if __name__ == "__main__":
    main()
