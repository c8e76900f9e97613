"""Write a copy of a pipeline whose AR, decoder or image tokenizer come from other training runs (a fine-tune, an
RL run, a new tokenizer).

    python scripts/replace_weights.py --pipeline xomni/pretrained/mini --ar runs/mini5/ar/final \
        --out runs/mini5/pipeline --stage ar_finetune "xomni train ar ... --init runs/mini4/ar/final ..." \
        --run-dir runs/mini5/ar
    python scripts/replace_weights.py --pipeline runs/mini5/pipeline --decoder runs/mini6/decoder/final \
        --out runs/mini6/pipeline --stage decoder_finetune "xomni train decoder ..." --run-dir runs/mini6/decoder

    python scripts/replace_weights.py --pipeline xomni/pretrained/mini --image-tokenizer TOK/final \
        --ar AR/final --decoder DEC/final --out CAND --stage next_model "..."

The other components are the base pipeline's. New AR weights must fit the base's AR architecture (its text
vocabulary is the text tokenizer's); the run's config.json, where there is one, comes with them (settings that
change no weight, such as `read_levels`). A new decoder brings its own config (sampling steps, strength) and must
fit the image tokenizer's grid and codebook. A new image tokenizer needs a new AR model and decoder with it (both
given as final/ directories with their config.json), since their image rows and grid follow the tokenizer. A
mismatch is one clear error and exit 2, with nothing written.

The new model_index.json keeps the base's provenance and adds: `base_pipeline` (which keeps the base's own
`base_pipeline`, so a chain of replacements stays traceable to the recipe run), the stage's command under
`stages_run_as[STAGE]`, its training time under `train_wall_s[STAGE]` (from the run's log), and `eval: null` (the
base's evaluation is kept as `base_eval`: evaluate the new pipeline before shipping it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xomni.ar.model import UnifiedAR  # noqa: E402
from xomni.checkpoint import load_model_weights  # noqa: E402
from xomni.decoder.model import Decoder  # noqa: E402
from xomni.errors import XomniError  # noqa: E402
from xomni.pipeline import Pipeline  # noqa: E402
from xomni.recipe import _git_commit, train_wall_s  # noqa: E402
from xomni.tokenizer import ImageTokenizer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", required=True, help="base pipeline directory")
    ap.add_argument("--ar", help="AR weights: a final/ or checkpoint directory of the new run")
    ap.add_argument("--decoder", help="decoder: the final/ directory (weights + config.json) of the new run")
    ap.add_argument("--image-tokenizer", help="a new image tokenizer (final/ directory); needs --ar and --decoder")
    ap.add_argument("--out", required=True, help="output pipeline directory")
    ap.add_argument("--stage", nargs=2, metavar=("NAME", "COMMAND"), required=True,
                    help="stage name and the exact command that trained the new weights")
    ap.add_argument("--run-dir", help="the run's output directory (its log.jsonl gives the training time)")
    ap.add_argument("--data", nargs="*", default=[], help="commands that made the stage's data")
    ap.add_argument("--index", action="append", default=[], metavar="KEY=JSON",
                    help="also set a model_index.json field, e.g. data_preset='\"sign\"' (repeatable)")
    a = ap.parse_args(argv)
    extra = {}
    for item in a.index:
        key, _, value = item.partition("=")
        try:
            extra[key or None] = json.loads(value)
        except json.JSONDecodeError:
            ap.error(f"--index wants KEY=JSON, got {item!r}")
    if None in extra:
        ap.error("--index wants KEY=JSON: the key is empty")
    if not (a.ar or a.decoder) or (a.image_tokenizer and not (a.ar and a.decoder)):
        ap.error("give --ar and/or --decoder (both with --image-tokenizer)")
    try:
        pipe = Pipeline.from_pretrained(a.pipeline)
        image_tok, ar, dec = pipe.image_tokenizer, pipe.ar, pipe.decoder
        if a.image_tokenizer:
            image_tok, ar = ImageTokenizer.from_pretrained(a.image_tokenizer), UnifiedAR.from_pretrained(a.ar).eval()
        elif a.ar:
            load_model_weights(ar, a.ar)  # the run's weights must fit the base's architecture
            if (Path(a.ar) / "config.json").is_file():  # and its own settings (e.g. read_levels) come with them
                ar = UnifiedAR.from_pretrained(a.ar).eval()
        if a.decoder:
            dec = Decoder.from_pretrained(a.decoder)
        pipe = Pipeline(pipe.text_tokenizer, image_tok, ar, dec, index=pipe.index, path=pipe.path)
    except XomniError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    idx = dict(pipe.index)
    stages = dict(idx.get("stages_run_as") or {})
    stages[a.stage[0]] = a.stage[1]
    if a.data:
        stages[f"{a.stage[0]}_data"] = a.data
    wall = dict(idx.get("train_wall_s") or {})
    if a.run_dir:
        wall[a.stage[0]] = train_wall_s(Path(a.run_dir))
    upd = {"base_pipeline": {"path": a.pipeline, "commit": idx.get("commit"), "command": idx.get("command"),
                             "base_pipeline": idx.get("base_pipeline")},
           "stages_run_as": stages, "train_wall_s": wall, "commit": _git_commit(),
           "eval": None, "eval_sampling": None, "base_eval": idx.get("eval"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    out = pipe.save_pretrained(a.out, index_update=upd, dtype=idx.get("weights_dtype"))
    print(json.dumps({"out": str(out), "stage": a.stage[0], "train_wall_s": wall.get(a.stage[0])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
