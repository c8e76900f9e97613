# the third drawing adapter (runs/s11/keep_c3) against the bundled model on val (docs/NEXT_MODEL.md, last section)
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; P=.venv/bin/python; M=xomni/pretrained/mini; C=runs/s11/c3; J=runs/s11/c3json; mkdir -p $J
S=models/mini/rvq_keep/sampling/sign_c3_1000.txt; W=models/mini/select_targets_val.txt
[ -d $C ] || $X lora merge --model $M --lora runs/s11/keep_c3/final -o $C --dtype float16 > $J/merge.json
[ -f $J/bundled_s.json ] || $X eval text --model $M --targets $S --samples 1 --seed 3 --unsupported zero \
    --per-image $J/bundled_s_rows.jsonl --json $J/bundled_s.json > /dev/null
[ -f $J/c3_s.json ] || $X eval text --model $C --targets $S --samples 1 --seed 3 --unsupported zero \
    --per-image $J/c3_s_rows.jsonl --save-images runs/s11/c3_img --json $J/c3_s.json > /dev/null
[ -f $J/c3_w.json ] || $X eval text --model $C --targets $W --samples 1 --seed 0 --per-image $J/c3_w_rows.jsonl \
    --json $J/c3_w.json > /dev/null
[ -f $J/c3_compliance.json ] || $X eval compliance --images runs/s11/c3_img --judge models/mini/judge \
    --json $J/c3_compliance.json > /dev/null
$P -c "
import json
from xomni.metrics.paired import paired_difference, read_rows
print(json.dumps(paired_difference(read_rows('$J/bundled_s_rows.jsonl'), read_rows('$J/c3_s_rows.jsonl')), indent=1))
" > $J/paired_s.json
$P -c "
import json
from xomni.metrics.paired import paired_difference, read_rows
print(json.dumps(paired_difference(read_rows('runs/s11/conf/chosen_w_rows.jsonl'), read_rows('$J/c3_w_rows.jsonl')), indent=1))
" > $J/paired_w.json
cat $J/paired_s.json | head -8
echo DECIDE C3 DONE
