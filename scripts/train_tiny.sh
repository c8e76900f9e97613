#!/usr/bin/env bash
# How the bundled model (xomni/pretrained/tiny) was trained: the tiny recipe's stages with the same settings as
# `xomni pipeline --preset tiny --out runs/tiny` (a test checks that the recipe and configs/*_tiny.yaml agree), but
# with the decoder and the AR model trained side by side after the tokenizer (1 thread each on 2 cores); when the
# decoder is done, the AR run is stopped with SIGTERM (it checkpoints the step it is at) and resumed on 2 threads.
# Every stage resumes from its last checkpoint when the script is run again. The last line assembles the pipeline
# from the finished stages, evaluates it and writes runs/tiny/pipeline (copy it to xomni/pretrained/tiny to ship it).
set -euo pipefail
OUT=${OUT:-runs/tiny}
X=${XOMNI:-.venv/bin/xomni}
mkdir -p "$OUT"
[ -f "$OUT/data/dataset.json" ] || $X data synth --out "$OUT/data" --n 20000 --seed 0
[ -f "$OUT/tokenizer/final/model.safetensors" ] || \
  $X train tokenizer --config configs/tokenizer_tiny.yaml --data "$OUT/data" --out "$OUT/tokenizer" --resume auto \
    --json "$OUT/tokenizer.json"
dec_pid=""
if [ ! -f "$OUT/decoder/final/model.safetensors" ]; then
  (exec $X train decoder --config configs/decoder_tiny.yaml --tokenizer "$OUT/tokenizer/final" --data "$OUT/data" \
    --out "$OUT/decoder" --resume auto --set train.num_threads=1 --json "$OUT/decoder.json" \
    > "$OUT/decoder.log" 2>&1) & dec_pid=$!
fi
ar() {  # $1 = threads; run in a subshell: exec makes its pid the trainer's, so SIGTERM reaches the trainer
  exec $X train ar --config configs/ar_tiny.yaml --data "$OUT/data" --tokenizer "$OUT/tokenizer/final" \
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
$X pipeline --preset tiny --out "$OUT" --json "$OUT/pipeline.json"
