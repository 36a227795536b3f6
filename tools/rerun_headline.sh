#!/usr/bin/env bash
# Rerun every result the README quotes, from a clean checkout, so each records the current commit.
# Usage: tools/rerun_headline.sh [STEP ...]   (steps: evaluate speed service finetune attack generalisation; default: all)
# Needs the prepared datasets (silhouette prepare pets2009 --out runs/data/pets2009; intel --out runs/data/intel).
# On the project's 2-core CPU: evaluate ~15 min, speed ~10 min, service ~5 min, finetune ~30 min, attack ~4 h,
# generalisation ~4 h (the leave-one-source-out trainings of both modes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SIL=${SIL:-.venv/bin/silhouette}
PETS=runs/data/pets2009
INTEL=runs/data/intel
ASSETS=src/silhouette/assets
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(evaluate speed service finetune attack generalisation)

evaluate() {  # utility of the shipped checkpoints and the private pair
  $PY experiments/evaluate_checkpoint.py --data $PETS --out results/shipped/evaluate_default.json
  $PY experiments/evaluate_checkpoint.py --data $PETS --checkpoint $ASSETS/obfuscator_edge.pt --out results/shipped/evaluate_edge.json
  $PY experiments/edge_int8_ap.py --data $PETS --checkpoint $ASSETS/obfuscator_edge.pt --out results/experiments/edge_int8_ap.json
  $SIL evaluate --pair $ASSETS/obfuscator_private.pt --data $PETS --split test --out results/private/pets_test
  $SIL evaluate --pair $ASSETS/obfuscator_private.pt --data $INTEL --split test --out results/private/intel_test
  $SIL evaluate --data $PETS --split test --detectors yolox_nano --out results/shipped/default_pets_test
  $SIL evaluate --checkpoint $ASSETS/obfuscator_edge.pt --data $PETS --split test --detectors yolox_nano --out results/shipped/edge_pets_test
  $SIL evaluate --clean --data $PETS --split test --detectors yolox_nano --out results/shipped/clean_pets_test
  $SIL evaluate --baseline fold:1 --data $PETS --split test --detectors yolox_nano --out results/shipped/fold1_pets_test
}
speed() { $PY benchmarks/edge.py; $PY benchmarks/obfuscate_video.py; }
service() { $PY benchmarks/service.py; $PY benchmarks/service_ray.py; }
finetune() {  # private mode's fair competitors: each baseline with YOLOX-Nano fine-tuned on the pair's budget
  for b in greypix:4 pixelate:4 blur:3 quantize:4 downscale:4; do
    n=${b/:/}
    $SIL finetune --config configs/private.yaml --baseline $b --out runs/ft_$n --no-progress
    mkdir -p checkpoints/private/$n && cp runs/ft_$n/pair.json runs/ft_$n/detector.onnx checkpoints/private/$n/
    $SIL evaluate --pair checkpoints/private/$n/pair.json --data $PETS --split test --out results/private/ft_${n}_pets_test
    # the same baseline before fine-tuning: the detector a user would otherwise run
    $SIL evaluate --baseline $b --data $PETS --split test --detectors yolox_nano --out results/private/unmodified_${n}_pets_test
  done
  # background-subtraction silhouettes: the mask pair is the shipped private pair (assets/silhouette_pair.*)
  for n in mask scene; do
    $SIL finetune --config configs/private.yaml --baseline bgsub:$n --out runs/ft_bgsub_$n --no-progress
    $SIL evaluate --pair runs/ft_bgsub_$n/pair.json --data $PETS --split test --out results/private/ft_bgsub_${n}_pets_test
  done
  mkdir -p checkpoints/private/bgsub_scene && cp runs/ft_bgsub_scene/pair.json runs/ft_bgsub_scene/detector.onnx checkpoints/private/bgsub_scene/
  $SIL evaluate --pair runs/ft_bgsub_mask/pair.json --data $INTEL --split test --out results/private/ft_bgsub_mask_intel_test
}
attack() {  # identity attacks on both modes, the zero-MAC map and the fine-tuned baselines; reconstruction of the pair
  $SIL attack --data $PETS --pair $ASSETS/obfuscator_private.pt \
    --methods ours,ours:edge=$ASSETS/obfuscator_edge.pt,fold:1,greypix:4,clean --attacks faces,reid \
    --threads 1 --out runs/attack_identity --no-progress
  $SIL attack --data $PETS --methods pixelate:4,blur:3,quantize:4,downscale:4 --attacks faces,reid \
    --threads 2 --out runs/attack_ft_baselines --no-progress
  $SIL attack --data $PETS --pair $ASSETS/obfuscator_private.pt --attacks reconstruction,faces --recon-scratch \
    --epochs 20 --threads 2 --out runs/attack_recon_private --no-progress
  local m
  for m in ours ours:edge=$ASSETS/obfuscator_edge.pt fold:1; do  # both compatible checkpoints and the zero-MAC map
    $SIL attack --data $PETS --methods $m --attacks reconstruction,faces --recon-scratch --epochs 20 --threads 2 \
      --out "runs/attack_recon_$(n=${m%%=*}; echo ${n/:/})" --no-progress
  done
  $SIL attack --data $PETS --methods greypix:4,pixelate:4,downscale:4,blur:3,quantize:4 --attacks reconstruction,faces \
    --recon-scratch --epochs 20 --threads 2 --out runs/attack_recon_baselines --no-progress
  # the silhouette styles (whole masks, 4x4-cell masks, scene): re-ID, reconstruction, faces
  $PY experiments/silhouette_floor.py --styles mask,scene,mask:4 --threads 1
  # one table: every attack beside each row's utility against human boxes (frontier.png); each baseline with the
  # better of its fine-tuned and unmodified detector
  local u=(--utility pixelate:4=results/private/ft_pixelate4_pets_test/evaluation.json) n
  for n in blur3 quantize4 downscale4; do u+=(--utility "${n/[0-9]*/}:${n//[a-z]/}=results/private/unmodified_${n}_pets_test/evaluation.json"); done
  for n in mask scene; do u+=(--utility "bgsub:$n=results/private/ft_bgsub_${n}_pets_test/evaluation.json"); done
  u+=(--utility bgsub:mask:4=results/private/ft_bgsub_mask4_pets_test/evaluation.json)
  $SIL scorecard --from runs/attack_identity --from runs/attack_ft_baselines --from runs/attack_recon_private \
    --from runs/attack_recon_baselines --from runs/attack_recon_ours --from runs/attack_recon_oursedge \
    --from runs/attack_recon_fold1 \
    --from results/experiments/silhouette_floor/scorecard --out results/privacy/identity "${u[@]}" \
    --utility private=results/private/pets_test/evaluation.json --utility ours=results/shipped/default_pets_test/evaluation.json \
    --utility ours:edge=results/shipped/edge_pets_test/evaluation.json --utility fold:1=results/shipped/fold1_pets_test/evaluation.json \
    --utility greypix:4=results/private/ft_greypix4_pets_test/evaluation.json --utility clean=results/shipped/clean_pets_test/evaluation.json
}
generalisation() {  # unseen footage; both modes through leave-one-source-out (one training per fold)
  $PY experiments/generalisation.py --max-frames 32 --face-every 3
  $PY experiments/loso.py
  $PY experiments/loso.py --finetune bgsub:mask --runs runs/loso_pair --out results/experiments/loso_private.json
}
for s in "${steps[@]}"; do echo "== $s"; "$s"; done
