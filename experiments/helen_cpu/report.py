"""Summarize a training run: per-epoch validation metrics (plot + markdown table).

    python experiments/helen_cpu/report.py outputs/helen_cpu/runs/<time> --out experiments/helen_cpu
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("f1_overall", "f1_brows", "f1_eyes", "f1_nose", "f1_mouth", "f1/skin", "f1/hair", "miou")


def read_val_rows(run_dir: Path) -> list[dict[str, float]]:
    """One row per validation epoch from the CSV logger's metrics.csv."""
    path = next(run_dir.glob("**/metrics.csv"))
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("val/f1_overall"):
                rows.append({"epoch": int(row["epoch"]), "step": int(row["step"]),
                             **{c: float(row[f"val/{c}"]) for c in COLUMNS}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    rows = read_val_rows(args.run_dir)
    lines = ["| epoch | step | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['step']} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |")
    (args.out / "val_per_epoch.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for c in COLUMNS:
        ax.plot([r["epoch"] + 1 for r in rows], [r[c] for r in rows], marker="o", label=c,
                linewidth=2.5 if c == "f1_overall" else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out / "val_per_epoch.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
