#!/bin/bash
# More drawing for the bundled model on a lent GPU (one call of the device tool, under 10 minutes):
#   bash scripts/gpu_more_drawing.sh        (repo root on the GPU machine; what lands in $OUT comes back)
# Carried beside the repo:
#   .whl/      wheels the GPU image lacks or has at other versions (the list: docs/NEXT_MODEL.md)
#   .devdata/  fonts/dejavu/DejaVuSans-Bold.ttf (the sign preset's one font) and american-english.xz (wamerican)
# It renders the sign preset (`xomni data synth --preset sign --n N --seed 0`, the data the bundled adapter trained
# on, and more of it) and continues the bundled model's keep-reader drawing adapter on it (`xomni train lora`, which
# on the bundled model continues ar_adapter/: captions stay exactly the same) on a wall-clock budget (AR_S seconds;
# the cosine schedule ends on time). What comes back: the adapter (final/, or the latest checkpoint) and the logs,
# as a tar in <= 15 MB parts. Then, on the CPU: `xomni lora merge --lora ark/final -o CAND --dtype float16` and the
# decision rule of docs/NEXT_MODEL.md against the bundled model.
# DRY=1 runs the same on the CPU in about a minute (a check of the script: N=2000, a budget of 20 s).
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=/tmp/logs; W=/tmp/md; rm -rf $L $W; mkdir -p $L $W
el() { echo "$1 at $(( $(date +%s) - T0 )) s" | tee -a $L/timeline.txt; }
if [ -z "$DRY" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD
    PY=python3; N=${N:-80000}; AR_S=${AR_S:-420}; END=${END:-555}; THREADS=6; BS=${BS:-128}
    DEV="--set train.device=cuda --set train.precision=bf16"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $L/nvidia_smi.txt 2>&1
else
    PY=.venv/bin/python; N=2000; AR_S=20; THREADS=1; END=${END:-600}; BS=8; DEV="--set train.device=cpu"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=$THREADS
if [ -d .devdata ]; then  # carried: the GPU image has no Debian fonts or words (elsewhere the system's are used)
    export XOMNI_FONT_DIRS=$PWD/.devdata/fonts XOMNI_WORDLIST=/tmp/american-english
    $PY -c "import lzma; open('/tmp/american-english', 'wb').write(lzma.open('.devdata/american-english.xz').read())"
fi
X="$PY -m xomni.cli"
# fail in seconds, not minutes: the CLI and the packages
$PY -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, \
torch.cuda.is_available())" > $L/versions.txt 2>&1 && $X train lora --help > /dev/null 2> $L/check.log ||
    { cat $L/versions.txt; tail -5 $L/check.log; exit 4; }
el "setup done"
NW=$(( THREADS * 2 )); [ $NW -gt $(nproc) ] && NW=$(nproc)
$X data synth --preset sign --n $N --seed 0 --out $W/sign --workers $NW > $L/synth.json 2> $L/synth.log ||
    { tail -5 $L/synth.log; exit 5; }
el "synth done"
# the run stops itself on its budget; the backstop (SIGTERM: the loop saves a checkpoint and exits) keeps the
# packing below inside the call's 10 minutes (END seconds after the start)
timeout -k 20 -s TERM $(( END - $(date +%s) + T0 )) $X train lora --data $W/sign --out $W/ark \
    --set train.steps=100000 --set train.budget_s=$AR_S --set train.batch_size=$BS --set train.lr=1e-3 \
    --set train.warmup_steps=100 --set train.eval_every=500 --set train.ckpt_every=500 --set val_n=256 \
    --set train.progress=false $DEV --json $L/train_ark.json > /dev/null 2> $L/train_ark.log
el "adapter rc=$?"
mkdir -p $W/back/ark
cp $W/ark/log.jsonl $W/back/ark/ 2>/dev/null
if [ -f $W/ark/final/adapter_model.safetensors ]; then cp -r $W/ark/final $W/back/ark/
else ck=$(ls -d $W/ark/checkpoints/step-* 2>/dev/null | tail -1)
     [ -n "$ck" ] && cp -r $ck $W/back/ark/ck; fi
cp -r $L $W/back/logs
tar cf - -C $W back | split -b 15000000 -d - "$OUT/back.tar.part"
el "all done"; ls -la "$OUT"
