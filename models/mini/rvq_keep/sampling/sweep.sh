# sampling settings of the bundled model: selection on models/mini/rvq_keep/sampling/sign_val500.txt (docs/NEXT_MODEL.md, last section)
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; M=xomni/pretrained/mini; J=runs/s11/sel; mkdir -p $J
for T in 0.55 0.35 0.2; do for G in 1 1.5 2.5; do
  f=$J/T${T}_cfg${G}
  [ -f $f.json ] || { s=$(date +%s); $X eval text --model $M --targets models/mini/rvq_keep/sampling/sign_val500.txt --samples 1 --seed 0 \
    --temperature $T --cfg $G --per-image ${f}_rows.jsonl --json $f.json > /dev/null; echo "$T $G $(( $(date +%s)-s ))s" >> $J/times.txt; }
done; done
echo SWEEP DONE
