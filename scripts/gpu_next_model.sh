#!/bin/bash
# The next bundled model's decoder and AR on a lent GPU (one H200, ~9 minutes of a 15-minute lease):
#   bash scripts/gpu_next_model.sh          (repo root on the GPU machine; what lands in $OUT comes back)
# Carried beside the repo:
#   .whl/      wheels the GPU image lacks or has at other versions (the list: docs/NEXT_MODEL.md)
#   .devdata/  fonts/dejavu/DejaVuSans-Bold.ttf (the sign preset's one font) and american-english.xz (wamerican)
# The image tokenizer is models/mini/rvq_sign/tokenizer (docs/NEXT_MODEL.md, second candidate).
# It renders the sign preset (`xomni data synth --preset sign --n 80000 --seed 0`; the tokenizer was trained on
# `--n 40000 --seed 0`), then trains the decoder and the AR (warm from the bundled AR, image rows fresh) at once on
# the GPU, each on a wall-clock budget (train.budget_s: the cosine schedule ends on time), the AR in two phases,
# the second caption-heavy; captioning reads level 0 only (READ_LEVELS=1, the AR's model.read_levels; 0 = all
# levels, as the second candidate ran). Both encode their data with the tokenizer on the GPU.
# The results come back as a tar in <= 15 MB parts: final/ (or the latest checkpoint's weights), log.jsonl, logs.
# GROW=1: the tokenizer (GROW_TOK) keeps the bundled tokenizer's level 0 (trained with model.freeze_level0,
# default models/mini/rvq_branch/tokenizer): the AR starts as the bundled one grown to its levels (`xomni
# add-levels --tokenizer`), every row kept, so with READ_LEVELS=1 it reads level 0 as the bundled AR does from the
# first step; without GROW, the bundled AR with its image rows fresh. Without GROW the decoder starts from
# scratch; with GROW from the second candidate's (models/mini/rvq_sign/decoder) with this tokenizer's code
# embeddings and recon hint (--init-except-codes, measured in docs/NEXT_MODEL.md; DEC_INIT="" trains from
# scratch).
# KEEP=1 (with GROW=1): the AR's drawing is learnt by a keep-reader LoRA adapter on the grown AR (`xomni train
# lora --set keep_reader=true`, rank RANK, default 64) for AR_S + CAP_S seconds, and no caption phase runs: the
# adapter is off when the model captions, so captions stay the bundled AR's. What comes back is the adapter (ark/).
# DRY=1 runs the same on the CPU in about a minute (a check of the script: N=2000, budgets of 20 s).
T0=$(date +%s)
[ -z "$KEEP" ] || [ -n "$GROW" ] || { echo "KEEP=1 needs GROW=1 (the adapter goes on the grown AR)"; exit 2; }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=/tmp/logs; W=/tmp/nm; rm -rf $L $W; mkdir -p $L $W
el() { echo "$1 at $(( $(date +%s) - T0 )) s" | tee -a $L/timeline.txt; }
if [ -z "$DRY" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD
    PY=python3; N=${N:-80000}; AR_S=${AR_S:-300}; CAP_S=${CAP_S:-120}; DEC_S=${DEC_S:-430}; END=${END:-555}; THREADS=6
    ARDEV="--set train.device=cuda --set train.precision=bf16"; DECDEV="--set train.device=cuda"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $L/nvidia_smi.txt 2>&1
else
    PY=.venv/bin/python; N=2000; AR_S=20; CAP_S=15; DEC_S=20; THREADS=1; END=${END:-600}
    ARDEV="--set train.device=cpu --set train.batch_size=8"; DECDEV="--set train.device=cpu --set train.batch_size=8"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=$THREADS
export XOMNI_FONT_DIRS=$PWD/.devdata/fonts XOMNI_WORDLIST=/tmp/american-english  # no Debian fonts or words there
python3 -c "import lzma; open('/tmp/american-english', 'wb').write(lzma.open('.devdata/american-english.xz').read())"
TOK=${TOK:-models/mini/rvq_sign/tokenizer}; [ -n "$GROW" ] && TOK=${GROW_TOK:-models/mini/rvq_branch/tokenizer}
X="$PY -m xomni.cli"; READ=${READ_LEVELS:-1}
# fail in seconds, not minutes: the CLI, the packages and the tokenizer on the training device
$PY -c "import torch, transformers, diffusers; print(torch.__version__, transformers.__version__, \
diffusers.__version__, torch.cuda.is_available())" > $L/versions.txt 2>&1
$X train ar --help > /dev/null 2> $L/check.log && $X train decoder --help > /dev/null 2>> $L/check.log &&
    $PY -c "import torch, sys; from xomni.tokenizer import ImageTokenizer; t = ImageTokenizer.from_pretrained(
sys.argv[1]).to('cuda' if torch.cuda.is_available() else 'cpu'); print(t.encode(torch.zeros(2, 3, 32,
128)).device)" $TOK >> $L/check.log 2>&1 || { cat $L/versions.txt; tail -5 $L/check.log; exit 4; }
el "setup done"
NW=$(( THREADS * 2 )); [ $NW -gt $(nproc) ] && NW=$(nproc)
$X data synth --preset sign --n $N --seed 0 --out $W/sign --workers $NW > $L/synth.json 2> $L/synth.log ||
    { tail -5 $L/synth.log; exit 5; }
el "synth done"
AR_INIT="--init xomni/pretrained/mini/ar --init-except-image"
if [ -n "$GROW" ]; then
    $X add-levels --tokenizer $TOK --data $W/sign -o $W/grown > $L/grown.json 2> $L/grown.log ||
        { tail -5 $L/grown.log; exit 6; }
    AR_INIT="--init $W/grown/ar"
    DEC_INIT=${DEC_INIT-"--init models/mini/rvq_sign/decoder --init-except-codes"}
    el "grown"
fi
# each run stops itself on its budget; the backstop (SIGTERM: the loop saves a checkpoint and exits) keeps the
# packing below inside the call's 10 minutes (END seconds after the start)
STOP=$(( END - $(date +%s) + T0 ))
ar() {  # output dir, budget in s, then more options: one AR run on the sign data, stopped by the backstop at END
    o=$1; b=$2; shift 2
    timeout -k 20 -s TERM $(( END - $(date +%s) + T0 )) $X train ar --config configs/ar_mini.yaml --data $W/sign \
        --tokenizer $TOK --out $W/$o --resume auto --set model.max_seq_len=288 --set model.read_levels=$READ \
        --set train.steps=100000 --set train.budget_s=$b --set train.batch_size=128 --set train.progress=false \
        "$@" $ARDEV --json $L/train_$o.json > /dev/null 2> $L/train_$o.log
}
if [ -n "$KEEP" ]; then
    (timeout -k 20 -s TERM $STOP $X train lora --model $W/grown --data $W/sign --out $W/ark --rank ${RANK:-64} \
        --set lora.alpha=${RANK:-64} --set keep_reader=true --set train.steps=100000 \
        --set train.budget_s=$(( AR_S + CAP_S )) --set train.batch_size=128 --set train.lr=2e-3 \
        --set train.warmup_steps=100 --set train.eval_every=500 --set train.ckpt_every=500 --set val_n=256 \
        --set train.progress=false $ARDEV --json $L/train_ark.json > /dev/null 2> $L/train_ark.log
     el "ar adapter rc=$?") &
else
(ar ar $AR_S $AR_INIT --set train.lr=1e-3 --set train.warmup_steps=100 \
    --set train.eval_every=500 --set train.ckpt_every=500; el "ar rc=$?"
 # the caption-heavy phase (70 % image->text sequences, as the bundled AR's last phases): reading needs it
 if [ "$CAP_S" -gt 0 ] && [ -f $W/ar/final/model.safetensors ]; then
    mkdir -p $W/arc && cp -r $W/ar/tokens-train $W/ar/tokens-val $W/arc/   # the same token caches, not re-encoded
    ar arc $CAP_S --init $W/ar/final --set t2i_ratio=0.3 --set train.lr=3e-4 --set train.warmup_steps=50 \
        --set train.eval_every=250 --set train.ckpt_every=250; el "ar captions rc=$?"
 fi) &
fi
(timeout -k 20 -s TERM $STOP $X train decoder --config configs/decoder_mini.yaml --tokenizer $TOK $DEC_INIT \
    --data $W/sign --out $W/dec --resume auto --set train.steps=100000 --set train.budget_s=$DEC_S \
    --set train.batch_size=128 --set train.lr=5e-4 --set train.warmup_steps=100 --set train.ckpt_every=1000 \
    --set n_val=0 --set train.progress=false $DECDEV --json $L/train_decoder.json > /dev/null \
    2> $L/train_decoder.log; el "decoder rc=$?") &
wait
# the weights: final/, or (a run stopped by the backstop) its latest checkpoint's model and state
for r in arc ar ark dec; do  # one AR's weights come back (the 64 MB limit): the caption phase's when it ran
    [ -d $W/$r ] || continue
    mkdir -p $W/back/$r
    cp $W/$r/log.jsonl $W/back/$r/ 2>/dev/null
    if [ $r = ar ] && [ -f $W/arc/final/model.safetensors ]; then :
    elif [ $r = ark ] && [ -f $W/ark/final/adapter_model.safetensors ]; then cp -r $W/ark/final $W/back/ark/
    elif [ -f $W/$r/final/model.safetensors ]; then cp -r $W/$r/final $W/back/$r/
    else ck=$(ls -d $W/$r/checkpoints/step-* 2>/dev/null | tail -1)
         [ -n "$ck" ] && mkdir -p $W/back/$r/ck && cp $ck/model.safetensors $ck/state.json $W/back/$r/ck/; fi
done
cp -r $L $W/back/logs
tar cf - -C $W back | split -b 15000000 -d - "$OUT/back.tar.part"
el "all done"; ls -la "$OUT"
