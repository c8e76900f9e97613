# second confirmation of the chosen sampling settings (docs/NEXT_MODEL.md, last section)
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; P=.venv/bin/python; M=xomni/pretrained/mini; C2=runs/s10/c800; J=runs/s11/conf2; mkdir -p $J
S=models/mini/rvq_keep/sampling/sign_confirm1000.txt
ev() { [ -f $J/$1.json ] || $X eval text --model $2 --targets $S --samples 1 --seed 2 --temperature $3 --cfg $4 \
    --unsupported zero --per-image $J/$1_rows.jsonl --json $J/$1.json > /dev/null; }
ev A $M 0.55 1
ev B $M 0.35 1.5
ev C $C2 0.35 1.5
$P - <<'PY'
import json
from xomni.metrics.paired import paired_difference, read_rows
J, J1 = "runs/s11/conf2", "runs/s11/conf"
r = lambda p: read_rows(p)
out = {"B_minus_A": paired_difference(r(f"{J}/A_rows.jsonl"), r(f"{J}/B_rows.jsonl")),
       "C_minus_B": paired_difference(r(f"{J}/B_rows.jsonl"), r(f"{J}/C_rows.jsonl")),
       "pooled_B_minus_A": paired_difference(r(f"{J1}/shipped_s_rows.jsonl") + r(f"{J}/A_rows.jsonl"),
                                             r(f"{J1}/chosen_s_rows.jsonl") + r(f"{J}/B_rows.jsonl")),
       "pooled_C_minus_B": paired_difference(r(f"{J1}/chosen_s_rows.jsonl") + r(f"{J}/B_rows.jsonl"),
                                             r(f"{J1}/c2_s_rows.jsonl") + r(f"{J}/C_rows.jsonl"))}
open(f"{J}/paired.json", "w").write(json.dumps(out, indent=1) + "\n")
for k, v in out.items():
    print(k, v["n"], v["exact_match"])
PY
echo CONFIRM2 DONE
