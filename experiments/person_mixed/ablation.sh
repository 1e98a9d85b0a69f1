#!/usr/bin/env bash
# Recipe ablation for experiment=person_mixed (results: experiments/person_mixed/ablation.md).
# Every arm trains the two-output model on the same mixed data (HELEN* + CCP + synthetic, 320 px,
# batch 8, Adam 1e-3, poly with 100 warmup steps, zoom-out p=0.5) for the same wall-clock budget
# (~9 min on the 2-core build machine): max_steps is set from each architecture's measured step
# time so its LR schedule runs to the end inside the budget; max_time guards it.
#   bash experiments/person_mixed/ablation.sh            (then evaluate.py on each arm's last.ckpt)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
BALANCED="[0.59,1.22,9.07,9.14,12.2,11.98,4.32,10.33,10.85,8.05,1.39]"
run() {  # name, max_steps, overrides...
  local name=$1 steps=$2; shift 2
  echo "=== arm $name ($steps steps) $(date -u +%H:%M:%S)"
  $PY train.py experiment=person_mixed task_name=ablation_$name +trainer.max_steps=$steps \
    trainer.max_epochs=100 trainer.max_time=00:00:10:30 callbacks.progress_bar=null "$@"
}
run ce 400 loss.class_weights=null
run balanced 400
run ohem 400 loss.class_weights=null loss.ohem=0.25
run zoom_strong 400 data.zoom.p=0.8 "data.zoom.scale=[0.08,0.8]"
run unet 240 model=unet_efficientnet_lite0 model.person_head=true
run fcn 540 model=fcn_efficientnet_lite0 model.person_head=true
echo "=== done $(date -u +%H:%M:%S)"
