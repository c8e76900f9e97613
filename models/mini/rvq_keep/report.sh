# the bars on the test split for the keep-reader candidate C (its pipeline: models/mini/rvq_keep/pipeline)
# inputs: D = xomni data synth --preset mini --out D --n 1000 --seed 0 --split test;
# V/upper500.txt = xomni data targets --kind upper --n 500 --seed 0; V/test_captions200.txt = D's first 200 test captions
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; R=runs/s9; J=$R/json; C=$R/cand; D=runs/evaldata; V=runs/rvq
[ -f $J/test_words_cand.json ] || $X eval text --model $C --targets models/mini/eval_targets.txt --seed 0 --samples 1 \
    --json $J/test_words_cand.json > /dev/null
[ -f $J/test_upper500_cand.json ] || $X eval text --model $C --targets $V/upper500.txt --seed 0 --samples 1 \
    --json $J/test_upper500_cand.json > /dev/null
[ -d $R/G200_cand ] || $X generate --model $C --prompts $V/test_captions200.txt --n 1 --seed 0 -o $R/G200_cand > /dev/null
[ -f $J/test_captions200_text_cand.json ] || $X eval text --images $R/G200_cand --json $J/test_captions200_text_cand.json > /dev/null
[ -f $J/test_captions200_compliance_cand.json ] || $X eval compliance --images $R/G200_cand --judge models/mini/judge \
    --json $J/test_captions200_compliance_cand.json > /dev/null
[ -f $J/test_longtext10_cand.json ] || $X eval longtext --bench xomni/data/longtext/text_prompts_en.jsonl --model $C \
    --max-chars 10 --json $J/test_longtext10_cand.json > /dev/null
[ -f $J/test_caption200_cand.json ] || $X eval caption --model $C --data $D --split test --n 200 \
    --json $J/test_caption200_cand.json > /dev/null
echo REPORT DONE
