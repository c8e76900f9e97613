# confirmation of the chosen sampling settings on strings the selection never saw (docs/NEXT_MODEL.md, last section)
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; P=.venv/bin/python; M=xomni/pretrained/mini; C2=runs/s10/c800; J=runs/s11/conf; mkdir -p $J
read T G < <($P models/mini/rvq_keep/sampling/pick.py); echo "chosen T=$T cfg=$G"
S=models/mini/rvq_keep/sampling/sign_confirm500.txt; W=models/mini/select_targets_val.txt
ev() { [ -f $J/$1.json ] || $X eval text --model $2 --targets $3 --samples 1 --seed $4 --temperature $5 --cfg $6 \
    --unsupported zero --per-image $J/$1_rows.jsonl ${7:+--save-images $7} --json $J/$1.json > /dev/null; }
ev shipped_s $M $S 1 0.55 1
ev chosen_s $M $S 1 $T $G runs/s11/conf_img
ev shipped_w $M $W 0 0.55 1
ev chosen_w $M $W 0 $T $G
[ -f $J/chosen_compliance.json ] || $X eval compliance --images runs/s11/conf_img --judge models/mini/judge \
    --json $J/chosen_compliance.json > /dev/null
ev c2_s $C2 $S 1 $T $G
ev c2_w $C2 $W 0 $T $G
pd() { $P -c "
import json
from xomni.metrics.paired import paired_difference, read_rows
print(json.dumps(paired_difference(read_rows('$J/$1_rows.jsonl'), read_rows('$J/$2_rows.jsonl')), indent=1))" > $J/$3.json; }
pd shipped_s chosen_s paired_chosen_vs_shipped_s; pd shipped_w chosen_w paired_chosen_vs_shipped_w
pd chosen_s c2_s paired_c2_vs_chosen_s; pd chosen_w c2_w paired_c2_vs_chosen_w
# line 4: make demo at the chosen settings (a copy of the bundled model with them in model_index.json)
MC=runs/s11/mini_chosen; rm -rf $MC; cp -r $M $MC
$P -c "
import json; p='$MC/model_index.json'; d=json.load(open(p)); d['sampling']={'temperature': $T, 'cfg_scale': $G}
open(p,'w').write(json.dumps(d, indent=2, sort_keys=True)+'\n')"
for m in $M $MC; do n=$(basename $m); /usr/bin/time -f "%e" -o $J/demo_wall_$n.txt $X demo --model $m -o runs/s11/demo_$n \
    --json $J/demo_$n.json > /dev/null; done
echo CONFIRM DONE
