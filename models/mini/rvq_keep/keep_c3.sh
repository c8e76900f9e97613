# continue the continued adapter (K2 = runs/s9/keep_c800) 700 more steps at lr 5e-4 (docs/NEXT_MODEL.md, last section)
set -e
cd /work/main
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni
$X train lora --model runs/s8/p0 --data runs/rvq/sign --out runs/s11/keep_c3 --init runs/s9/keep_c800/final \
   --set keep_reader=true --set train.steps=700 --set train.lr=5e-4 --set train.warmup_steps=20 \
   --set train.eval_every=350 --set train.ckpt_every=50 --set val_n=256 --resume auto \
   --json runs/s11/train_keep_c3.json > /dev/null
echo keep_c3 done
