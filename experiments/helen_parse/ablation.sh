#!/usr/bin/env bash
# Helen-parse recipe ablation at equal compute (results: experiments/helen_parse/results.md).
# Arms (each ~15 min of uncontended compute on a 2-core CPU; steps from measured step times:
# FPN/Lite0 batch 8 takes ~0.8 s at 256 px and ~1.2 s at 320 px):
#   plain        the plain Helen-only recipe (control): experiment=helen_plain, 5 epochs = 1125 steps at 256 px
#   ft_balanced  stage 2 from the bundled model, class-balanced CE: experiment=person_helen_ft, 750 steps at 320 px
#   ft_plain     the same with plain CE
#   long         stage 3: experiment=person_helen_long from the ft_plain weights, 2000 steps at 320 px
#                (not part of the default ARMS; ARMS=long; it was run with the EMA callback, which also
#                records the EMA of the weights: its checkpoint holds both)
#   s384         stage 4 from the `long` weights at a 384-px input: experiment=person_helen_384, 4 x 250 =
#                1000 steps (the stage the bundled model ends with)
#   s320         its control: stage 3's recipe again at 320 px for 6 x 250 = 1500 steps (a 384-px step
#                has 1.44x the pixels of a 320-px one: about the same compute)
#                (ARMS="s384 s320" INIT=<stage-3 weights>: they were run from the stage-3 model bundled then)
#   s448         stage 5 from the stage-4 weights at a 448-px input, peak lr 1.5e-4: experiment=person_helen_448,
#                3 x 250 = 750 steps (a 448-px step has 1.36x the pixels of a 384-px one; the stage the
#                bundled model ends with)
#   s384c        its control: the same continuation at 384 px for 4 x 250 = 1000 steps
#                (ARMS="s448 s384c" INIT=<stage-4 weights>: they were run from the stage-4 model bundled then)
#   lovasz       stage 6 from the stage-5 weights: stage 5's recipe (448 px, peak lr 1.5e-4) with a
#                Lovasz-softmax term added to the parse CE: experiment=person_helen_lovasz
#                (loss.lovasz_weight=1), 2 x 250 = 500 steps
#   s448c        its control: the same 500 steps without the Lovasz term
#                (ARMS=lovasz and ARMS=s448c were run side by side, one thread each: OMP_NUM_THREADS=1
#                EXTRA=data.num_workers=1)
#   lovasz_w3    stage 7 from the stage-6 weights: stage 6's recipe with the Lovasz term at weight 3,
#                another 2 x 250 = 500 steps: experiment=person_helen_lovasz_w3 (the stage the bundled
#                model ends with)
#   lovasz_more  its equal-budget alternative: the same 500 steps at weight 1 (stage 6's recipe again)
#                (ARMS=lovasz_w3 and ARMS=lovasz_more side by side, one thread each, INIT=<stage-6 weights>)
#   bash experiments/helen_parse/ablation.sh      (ARMS="plain ft_plain" to pick; then evaluate.py on each last.ckpt)
# EXTRA: more overrides for every arm (the tests run it with a tiny model for a few steps).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
INIT=${INIT:-src/portraitseg/weights/default.pt}
ARMS=${ARMS:-plain ft_balanced ft_plain}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
for arm in $ARMS; do
  echo "=== arm $arm $(date -u +%H:%M:%S)"
  case $arm in
    plain) $PY train.py experiment=helen_plain task_name=hp_plain callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    ft_balanced) $PY train.py experiment=person_helen_ft task_name=hp_ft_balanced init_from=$INIT \
                   callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    ft_plain) $PY train.py experiment=person_helen_ft task_name=hp_ft_plain init_from=$INIT \
                loss.class_weights=null callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    long) $PY train.py experiment=person_helen_long task_name=hp_long init_from=$INIT \
            callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    s384) $PY train.py experiment=person_helen_384 task_name=hp_s384 init_from=$INIT \
            callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    s320) $PY train.py experiment=person_helen_long task_name=hp_s320 init_from=$INIT \
            trainer.max_epochs=6 callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    s448) $PY train.py experiment=person_helen_448 task_name=hp_s448 init_from=$INIT \
            callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    s384c) $PY train.py experiment=person_helen_384 task_name=hp_s384c init_from=$INIT \
             optimizer.lr=1.5e-4 callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    lovasz) $PY train.py experiment=person_helen_lovasz task_name=hp_lovasz init_from=$INIT \
              callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    s448c) $PY train.py experiment=person_helen_lovasz task_name=hp_s448c init_from=$INIT \
             loss.lovasz_weight=0.0 callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    lovasz_w3) $PY train.py experiment=person_helen_lovasz_w3 task_name=hp_lovasz_w3 init_from=$INIT \
                 callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    lovasz_more) $PY train.py experiment=person_helen_lovasz_w3 task_name=hp_lovasz_more init_from=$INIT \
                   loss.lovasz_weight=1.0 callbacks.progress_bar=null "${EXTRA_ARGS[@]}" ;;
    *) echo "unknown arm: $arm (plain, ft_balanced, ft_plain, long, s384, s320, s448, s384c, lovasz, s448c," \
            "lovasz_w3, lovasz_more)" >&2
       exit 2 ;;
  esac
done
echo "=== done $(date -u +%H:%M:%S)"
