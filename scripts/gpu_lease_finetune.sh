#!/bin/bash
# An AR fine-tune on a lent GPU (one H200, 15 minutes of device time): `BUDGET=270 bash THIS` in the
# repo root on the GPU machine, with $OUT the folder whose files come back. It expects, carried beside the repo:
#   .whl/     wheels the GPU image lacks (diffusers, vector-quantize-pytorch and its deps, transformers 5.24)
#   .devdata/ tok4_codes.safetensors.xz + tok4_meta.jsonl.xz + tok4_info.json: the token cache of
#             `xomni data synth --preset mini --out runs/runs_d4 --n 160000 --seed 4 --split train` encoded by the
#             bundled image tokenizer (xomni.ar.data.encode_to_cache; codes as int16, files xz-compressed to fit
#             the 64 MiB transfer), tokval/ (the first 256 val renders of seed 0, encoded the same way) and
#             eval_targets.txt (= models/mini/eval_targets.txt).
# It checks the CUDA path (scripts/device_check.py) and then runs three timed AR fine-tunes of the bundled AR side by
# side on the GPU (scripts/timed_finetune.py). Which run became the bundled AR: docs/RECIPE.md.
# One GPU lease: install the carried wheels, unpack the token caches, check the CUDA path, then three timed
# AR fine-tunes side by side on the GPU. Everything useful lands in $OUT (<= 8 files).
T0=$(date +%s)
[ -n "$DRY" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
D=.devdata; P=xomni/pretrained/mini; L=/tmp/logs; mkdir -p $L /tmp/tok4
python3 - <<'PY' || exit 4
import lzma, shutil
for s, d in [(".devdata/tok4_codes.safetensors.xz", "/tmp/tok4/codes.safetensors"), (".devdata/tok4_meta.jsonl.xz", "/tmp/tok4/meta.jsonl")]:
    open(d, "wb").write(lzma.decompress(open(s, "rb").read()))
shutil.copy(".devdata/tok4_info.json", "/tmp/tok4/info.json")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $L/nvidia_smi.txt 2>&1
python3 -c "import torch, transformers, diffusers; print(torch.__version__, transformers.__version__, diffusers.__version__, torch.cuda.is_available())" > $L/versions.txt 2>&1
echo "setup done at $(( $(date +%s) - T0 )) s"
timeout 170 python3 scripts/device_check.py --tokens /tmp/tok4 --targets $D/eval_targets.txt --samples 4 \
    --images-out /tmp/imgs --json $L/device_check.json $CHECK_ARGS > /dev/null 2> $L/device_check.log
echo "check rc=$? at $(( $(date +%s) - T0 )) s"; tail -c 1500 $L/device_check.log
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # three trainers share 16 cores
ft() {  # name, then --set overrides
    n=$1; shift
    timeout 330 python3 scripts/timed_finetune.py --budget-s ${BUDGET:-240} --config configs/ar_mini.yaml \
        --data /tmp/tok4 --tokenizer $P/image_tokenizer --init $P/ar --out /tmp/ft_$n --val $D/tokval \
        --export /tmp/ex_$n --json /tmp/ex_$n.json --set train.progress=false --set train.eval_every=0 $FT_ARGS "$@" \
        > $L/ft_$n.out 2> $L/ft_$n.log
    echo "ft $n rc=$?" >> $L/ft_rc.txt
}
ft A --set t2i_ratio=0.5 --set train.lr=1e-4 --set train.warmup_steps=50 --set train.batch_size=128 &
ft B --set t2i_ratio=0.5 --set train.lr=3e-4 --set train.warmup_steps=200 --set train.batch_size=128 &
ft C --set t2i_ratio=0.6 --set train.lr=5e-4 --set train.warmup_steps=300 --set train.batch_size=256 &
wait
echo "fine-tunes done at $(( $(date +%s) - T0 )) s"; cat $L/ft_rc.txt
for n in A B C; do
    [ -f /tmp/ex_$n/model.safetensors ] || python3 scripts/timed_finetune.py --export-only --budget-s 0 \
        --config configs/ar_mini.yaml --data /tmp/tok4 --tokenizer $P/image_tokenizer --out /tmp/ft_$n \
        --val $D/tokval --export /tmp/ex_$n --json /tmp/ex_$n.json >> $L/ft_$n.out 2>> $L/ft_$n.log
    cp /tmp/ex_$n/model.safetensors $OUT/ar_$n.safetensors 2>/dev/null
    mkdir -p $L/ft_$n; cp /tmp/ex_$n/config.json /tmp/ex_$n.json /tmp/ft_$n/log.jsonl $L/ft_$n/ 2>/dev/null
done
tar czf $OUT/results.tar.gz -C /tmp logs imgs 2>/dev/null
echo "all done at $(( $(date +%s) - T0 )) s"; ls -la $OUT
