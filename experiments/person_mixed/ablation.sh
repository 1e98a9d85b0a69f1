#!/usr/bin/env bash
# Recipe ablation for experiment=person_mixed (results: experiments/person_mixed/results.md).
# Every arm trains the two-output model on the same mixed data (HELEN* + CCP + synthetic, 320 px,
# batch 8, Adam 1e-3, poly with 100 warmup steps, zoom-out p=0.5, 2 epochs) for the same wall-clock
# budget (~9 min on the 2-core build machine): the epoch length is set from each architecture's
# measured step time (FPN 1.2 s, U-Net 2.2 s, FCN 0.93 s a batch of 8 at 320 px), so every arm's
# LR schedule runs to its end inside the budget (FPN 330 steps, U-Net 180, FCN 420).
#   bash experiments/person_mixed/ablation.sh            (then evaluate.py on each arm's last.ckpt)
#   ARMS=ce EXTRA="data.image_size=64 ..." bash experiments/person_mixed/ablation.sh   (EXTRA: Hydra
#   overrides added to every arm, e.g. the tiny run of tests/test_experiments.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
run() {  # name, samples per epoch, overrides...
  local name=$1 size=$2; shift 2
  echo "=== arm $name (2 x $size samples) $(date -u +%H:%M:%S)"
  $PY train.py experiment=person_mixed task_name=ablation_$name data.epoch_size=$size \
    trainer.max_epochs=2 trainer.max_time=null callbacks.progress_bar=null "$@" ${EXTRA:-}
}
ARMS=${ARMS:-ce balanced ohem fcn zoom_strong}
for arm in $ARMS; do
  case $arm in
    ce) run ce 1320 loss.class_weights=null ;;
    balanced) run balanced 1320 ;;
    ohem) run ohem 1320 loss.class_weights=null loss.ohem=0.25 ;;
    zoom_strong) run zoom_strong 1320 data.zoom.p=0.8 "data.zoom.scale=[0.08,0.8]" ;;
    unet) run unet 720 model=unet_efficientnet_lite0 model.person_head=true ;;
    fcn) run fcn 1680 model=fcn_efficientnet_lite0 model.person_head=true ;;
  esac
done
echo "=== done $(date -u +%H:%M:%S)"
