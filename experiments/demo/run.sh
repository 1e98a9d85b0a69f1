#!/usr/bin/env bash
# `make demo`'s training, the previous recipe ("before": U-Net, plain cross-entropy, checkpoint kept
# on subject IoU) against the current one ("after": conf/experiment/demo.yaml, FPN with
# class-balanced cross-entropy), on the embedded synthetic portraits (64 x 128 px, 40 steps).
# Prints each arm's CPU and wall time and its validation scores per epoch.
#   bash experiments/demo/run.sh            (OUT=... for another output folder; EXTRA="k=v ...":
#   Hydra overrides added to both arms, e.g. the tiny run of tests/test_experiments.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/demo_compare}
before="model=unet_efficientnet_lite0 loss.class_weights=null optimized_metric=val/subject_iou"
for arm in before after; do
  overrides=""
  [ "$arm" = before ] && overrides=$before
  # shellcheck disable=SC2086
  /usr/bin/time -f "$arm: %U s user + %S s system CPU, %e s wall, peak RSS %M KB" \
    "$PY" train.py experiment=demo task_name="demo_$arm" paths.log_dir="$OUT" $overrides \
    trainer.enable_progress_bar=false ${EXTRA:-} > "$OUT.$arm.log" 2>&1 || { tail -20 "$OUT.$arm.log"; exit 1; }
  tail -1 "$OUT.$arm.log"
  "$PY" - "$OUT/demo_$arm" <<'PYEOF'
import csv, glob, sys
path = sorted(glob.glob(f"{sys.argv[1]}/runs/*/csv/metrics.csv"))[-1]
for row in csv.DictReader(open(path)):
    if row.get("val/f1_overall"):
        print(f"  epoch {row['epoch']}: overall F1 {float(row['val/f1_overall']):.3f}, subject IoU "
              f"{float(row['val/subject_iou']):.3f}, mIoU {float(row['val/miou']):.3f}")
PYEOF
done
