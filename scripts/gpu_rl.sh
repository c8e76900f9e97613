#!/bin/bash
# GRPO on a lent GPU at 10x the CPU run's batch (1280 prompts x G=8 per optimizer step), sized to ~10 minutes:
#   BUDGET=480 MODEL=xomni/pretrained/mini bash scripts/gpu_rl.sh      (repo root on the GPU machine; $OUT comes back)
# Carried beside the repo: .whl/ with the wheels the GPU image lacks (pip download --no-deps rapidocr onnxruntime
# diffusers vector-quantize-pytorch transformers==<pinned> ...). DRY=1 runs two small steps on the CPU instead
# (a check of the script itself). Everything useful lands in $OUT: the tuned AR weights, log.jsonl, the run's JSON.
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -z "$DRY" ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
MODEL=${MODEL:-xomni/pretrained/mini}; RUN=/tmp/rl_gpu; DATA=/tmp/rl_data
XOMNI="python3 -m xomni.cli"
$XOMNI data synth --preset mini --out $DATA --n ${N_PROMPTS:-20000} --seed 11 > /dev/null || exit 4
if [ -n "$DRY" ]; then
    SIZE="--set train.batch_size=4 --set train.grad_accum=1 --set train.steps=2 --set val_n=4 --set train.device=cpu"
else
    SIZE="--set train.batch_size=1280 --set train.grad_accum=4 --set train.steps=${STEPS:-40} --set rollout_batch=640 \
          --set reward_workers=${WORKERS:-12} --set val_n=256 --set train.device=cuda --set train.precision=bf16"
fi
echo "setup done at $(( $(date +%s) - T0 )) s"
# the run checkpoints every step; `timeout` sends SIGTERM, the loop saves and exits, and the weights come back anyway
timeout -s TERM ${BUDGET:-480} $XOMNI train rl --model "$MODEL" --data $DATA --config configs/rl_mini.yaml --out $RUN \
    --set train.ckpt_every=1 --set train.eval_every=10 --set train.progress=false $SIZE --resume auto $RL_ARGS \
    --json "$OUT/train_rl.json" > "$OUT/train_rl.out" 2> "$OUT/train_rl.log"
echo "rl rc=$? at $(( $(date +%s) - T0 )) s"
cp $RUN/log.jsonl "$OUT/" 2>/dev/null
if [ -f $RUN/pipeline/ar/model.safetensors ]; then
    cp $RUN/pipeline/ar/model.safetensors "$OUT/ar.safetensors"
else  # stopped by the budget: the latest checkpoint's weights are the AR's (same keys)
    ck=$(ls -d $RUN/checkpoints/step-* 2>/dev/null | tail -1)
    [ -n "$ck" ] && cp "$ck/model.safetensors" "$OUT/ar.safetensors" && echo "$ck" > "$OUT/ar_from_checkpoint.txt"
fi
echo "all done at $(( $(date +%s) - T0 )) s"; ls -la "$OUT"
