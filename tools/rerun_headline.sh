#!/usr/bin/env bash
# Rerun every result the README quotes, from a clean checkout, so each records the current commit.
# Usage: tools/rerun_headline.sh [STEP ...]   (steps: evaluate speed service attack generalisation; default: all)
# Needs the prepared datasets (silhouette prepare pets2009 --out runs/data/pets2009; intel --out runs/data/intel).
# On the project's 2-core CPU: evaluate ~15 min, speed ~10 min, service ~5 min, attack ~1 h, generalisation ~30 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SIL=${SIL:-.venv/bin/silhouette}
PETS=runs/data/pets2009
INTEL=runs/data/intel
ASSETS=src/silhouette/assets
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(evaluate speed service attack generalisation)

evaluate() {  # utility of the shipped checkpoints and the private pair
  $PY experiments/evaluate_checkpoint.py --data $PETS --out results/shipped/evaluate_default.json
  $PY experiments/evaluate_checkpoint.py --data $PETS --checkpoint $ASSETS/obfuscator_edge.pt --out results/shipped/evaluate_edge.json
  $PY experiments/edge_int8_ap.py --data $PETS --checkpoint $ASSETS/obfuscator_edge.pt --out results/experiments/edge_int8_ap.json
  $SIL evaluate --pair $ASSETS/obfuscator_private.pt --data $PETS --split test --out results/private/pets_test
  $SIL evaluate --pair $ASSETS/obfuscator_private.pt --data $INTEL --split test --out results/private/intel_test
  $SIL evaluate --pair checkpoints/private/greypix4/pair.json --data $PETS --split test --out results/private/greypix4_pets_test
  $SIL evaluate --data $PETS --split test --detectors yolox_nano --out results/shipped/default_pets_test
  $SIL evaluate --checkpoint $ASSETS/obfuscator_edge.pt --data $PETS --split test --detectors yolox_nano --out results/shipped/edge_pets_test
  $SIL evaluate --clean --data $PETS --split test --detectors yolox_nano --out results/shipped/clean_pets_test
  $SIL evaluate --baseline greypix:4 --data $PETS --split test --detectors yolox_nano --out results/shipped/greypix4_unmodified_pets_test
  $SIL evaluate --baseline fold:1 --data $PETS --split test --detectors yolox_nano --out results/shipped/fold1_pets_test
}
speed() { $PY benchmarks/edge.py; $PY benchmarks/obfuscate_video.py; }
service() { $PY benchmarks/service.py; $PY benchmarks/service_ray.py; }
attack() {  # identity attacks on both modes, the zero-MAC map and private mode's fair competitor
  $SIL attack --data $PETS --pair $ASSETS/obfuscator_private.pt \
    --methods ours,ours:edge=$ASSETS/obfuscator_edge.pt,fold:1,greypix:4,clean --attacks faces,reid \
    --threads 1 --out runs/attack_identity --no-progress
  # one table: the identity attacks beside each row's utility against human boxes (frontier.png)
  $SIL scorecard --from runs/attack_identity --out results/privacy/identity \
    --utility private=results/private/pets_test/evaluation.json --utility ours=results/shipped/default_pets_test/evaluation.json \
    --utility ours:edge=results/shipped/edge_pets_test/evaluation.json --utility fold:1=results/shipped/fold1_pets_test/evaluation.json \
    --utility greypix:4=results/private/greypix4_pets_test/evaluation.json --utility clean=results/shipped/clean_pets_test/evaluation.json
}
generalisation() { $PY experiments/generalisation.py --max-frames 32 --face-every 3; }
for s in "${steps[@]}"; do echo "== $s"; "$s"; done
