#!/usr/bin/env bash
# The figures quoted for a tiny-preset pipeline (default: the bundled model), one command each, JSON into $OUT.
#   bash scripts/eval_tiny.sh [MODEL] [DATA] [OUT]      (env: N strings, JUDGE dir, XOMNI binary)
# DATA is a `xomni data synth --n 20000 --seed 0` output (its test split holds words never trained on); JUDGE is a
# compliance judge from `xomni train judge` (skipped when missing).
set -euo pipefail
MODEL=${1:-xomni/pretrained/tiny}
DATA=${2:-runs/tiny/data}
OUT=${3:-runs/tiny/eval_full}
N=${N:-64}
JUDGE=${JUDGE:-runs/judge-seed0}
X=${XOMNI:-.venv/bin/xomni}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
# the first N distinct test-split strings and the first N test captions (with their colours, fonts, shapes)
"$PY" - "$DATA" "$N" "$OUT" <<'PY'
import sys
from xomni.data.io import open_dataset
data, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ds = open_dataset(data, split="test")
texts, caps = [], []
for i in range(len(ds)):
    m = ds.meta(i)
    if m["text"] not in texts and len(texts) < n:
        texts.append(m["text"])
    if len(caps) < n:
        caps.append(m["caption"])
open(f"{out}/targets.txt", "w").write("".join(t + "\n" for t in texts))
open(f"{out}/captions.txt", "w").write("".join(c + "\n" for c in caps))
PY
ev() { $X eval text --model "$MODEL" --targets "$OUT/targets.txt" --samples 1 --seed 0 --preset tiny "$@"; }
ev --json "$OUT/text_default.json" --save-images "$OUT/gen_default" > /dev/null
ev --top-k 1 --json "$OUT/text_greedy.json" > /dev/null
ev --temperature 0.7 --json "$OUT/text_t07.json" > /dev/null
$X generate --prompts "$OUT/captions.txt" --n 1 --seed 0 --model "$MODEL" -o "$OUT/gen_captions" > /dev/null
$X eval text --images "$OUT/gen_captions" --preset tiny --json "$OUT/text_captions.json" > /dev/null
if [ -d "$JUDGE" ]; then
  $X eval compliance --images "$OUT/gen_captions" --judge "$JUDGE" --json "$OUT/compliance.json" > /dev/null
fi
$X eval caption --model "$MODEL" --data "$DATA" --split test --n 200 --json "$OUT/caption.json" > /dev/null
$X bench generate --model "$MODEL" --json "$OUT/bench_generate.json" > /dev/null
echo "$OUT"
