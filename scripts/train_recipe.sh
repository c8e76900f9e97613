#!/usr/bin/env bash
# Usage: bash scripts/train_recipe.sh [mini|tiny]   (default mini: the bundled model's recipe)
# How the bundled model (xomni/pretrained/mini) was trained: the recipe's stages with the same settings as
# `xomni pipeline --preset PRESET --out runs/PRESET` (a test checks that the recipe and configs/*_PRESET.yaml agree), but
# with the decoder and the AR model trained side by side after the tokenizer (1 thread each on 2 cores); when the
# decoder is done, the AR run is stopped with SIGTERM (it checkpoints the step it is at) and resumed on 2 threads.
# Every stage resumes from its last checkpoint when the script is run again. The last line assembles the pipeline
# from the finished stages, evaluates it and writes runs/PRESET/pipeline (copy it to xomni/pretrained/$P to ship it).
set -euo pipefail
P=${1:-mini}
OUT=${OUT:-runs/$P}
X=${XOMNI:-.venv/bin/xomni}
PYTHON=${PYTHON:-.venv/bin/python}
# the recipe's own data preset and training-set size (an unknown recipe fails here with the list of valid ones)
read -r DP N < <($PYTHON -c "
import sys
from xomni.errors import XomniError
from xomni.recipe import load_recipe
try:
    r = load_recipe(sys.argv[1], None, None)
except XomniError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
print(r.data_preset, r.n_train)" "$P") || exit 2
[ -n "${N:-}" ] || exit 2
mkdir -p "$OUT"
[ -f "$OUT/data/dataset.json" ] || $X data synth --preset "$DP" --out "$OUT/data" --n "$N" --seed 0 --workers 2
[ -f "$OUT/tokenizer/final/model.safetensors" ] || \
  $X train tokenizer --config configs/tokenizer_$P.yaml --data "$OUT/data" --out "$OUT/tokenizer" --resume auto \
    --json "$OUT/tokenizer.json"
dec_pid=""
if [ ! -f "$OUT/decoder/final/model.safetensors" ]; then
  (exec $X train decoder --config configs/decoder_$P.yaml --tokenizer "$OUT/tokenizer/final" --data "$OUT/data" \
    --out "$OUT/decoder" --resume auto --set train.num_threads=1 --json "$OUT/decoder.json" \
    > "$OUT/decoder.log" 2>&1) & dec_pid=$!
fi
ar() {  # $1 = threads; run in a subshell: exec makes its pid the trainer's, so SIGTERM reaches the trainer
  exec $X train ar --config configs/ar_$P.yaml --data "$OUT/data" --tokenizer "$OUT/tokenizer/final" \
    --out "$OUT/ar" --resume auto --set train.num_threads="$1" --json "$OUT/ar.json" >> "$OUT/ar.log" 2>&1
}
if [ ! -f "$OUT/ar/final/model.safetensors" ]; then
  if [ -n "$dec_pid" ]; then
    (ar 1) & ar_pid=$!
    wait "$dec_pid"
    kill -TERM "$ar_pid" 2>/dev/null || true
    wait "$ar_pid" || true
  fi
  (ar 2)
fi
[ -z "$dec_pid" ] || wait "$dec_pid" || true
$X pipeline --preset "$P" --out "$OUT" --json "$OUT/pipeline.json"
