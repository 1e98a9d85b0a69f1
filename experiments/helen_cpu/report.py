"""Summarize training runs: per-epoch validation metrics (plot + markdown table).

Several run directories are read as consecutive stages (e.g. a run and its fine-tune):

    python experiments/helen_cpu/report.py outputs/helen_cpu/runs/<t1> outputs/helen_cpu_ft/runs/<t2>
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
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    rows, offset = [], 0
    for stage, run_dir in enumerate(args.run_dirs, 1):
        stage_rows = read_val_rows(run_dir)
        for r in stage_rows:
            rows.append({**r, "stage": stage, "total_step": offset + r["step"] + 1})
        offset = rows[-1]["total_step"]
    lines = ["| stage | epoch | optimizer steps (total) | " + " | ".join(COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['epoch']} | {r['total_step']} | "
                     + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |")
    (args.out / "val_per_epoch.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for c in COLUMNS:
        ax.plot([r["total_step"] for r in rows], [r[c] for r in rows], marker="o", label=c,
                linewidth=2.5 if c == "f1_overall" else 1)
    for r0, r1 in zip(rows, rows[1:], strict=False):
        if r1["stage"] != r0["stage"]:
            ax.axvline(r0["total_step"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("optimizer steps (batch 8); dotted: next stage")
    ax.set_ylabel("validation score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out / "val_per_epoch.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
