# the bars on the test split at the bundled model's (new) shipped sampling settings: model defaults
cd /work/main; set -x
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
X=.venv/bin/xomni; M=xomni/pretrained/mini; D=runs/evaldata; V=runs/rvq; J=models/mini/rvq_keep/sampling; mkdir -p $J
[ -f $J/test_words.json ] || $X eval text --model $M --targets models/mini/eval_targets.txt --seed 0 --samples 1 \
    --json $J/test_words.json > /dev/null
[ -f $J/test_words_greedy.json ] || $X eval text --model $M --targets models/mini/eval_targets.txt --seed 0 --samples 1 \
    --top-k 1 --json $J/test_words_greedy.json > /dev/null
[ -f $J/test_upper500.json ] || $X eval text --model $M --targets $V/upper500.txt --seed 0 --samples 1 \
    --json $J/test_upper500.json > /dev/null
[ -d runs/s11/G200 ] || $X generate --model $M --prompts $V/test_captions200.txt --n 1 --seed 0 -o runs/s11/G200 > /dev/null
[ -f $J/test_captions200_text.json ] || $X eval text --images runs/s11/G200 --json $J/test_captions200_text.json > /dev/null
[ -f $J/test_captions200_compliance.json ] || $X eval compliance --images runs/s11/G200 --judge models/mini/judge \
    --json $J/test_captions200_compliance.json > /dev/null
[ -f $J/test_longtext10.json ] || $X eval longtext --bench xomni/data/longtext/text_prompts_en.jsonl --model $M \
    --max-chars 10 --json $J/test_longtext10.json > /dev/null
[ -f $J/bench_generate_vs_previous.json ] || $X bench generate --model $M --baseline runs/old_mini/p --n 4 --runs 5 \
    --compile --json $J/bench_generate_vs_previous.json > /dev/null
echo REPORT DONE
