"""Recipe presets load into their config dataclasses, and bad presets/keys fail with one clear line."""
import pytest

from xomni.errors import XomniError
from xomni.recipe import charset_of, load_recipe, train_wall_s


def test_presets_load_with_their_stage_settings():
    # the recipe's stages use exactly the settings of the standalone stage configs in configs/
    from pathlib import Path

    import yaml

    from xomni.config import to_dict
    root = Path(__file__).resolve().parents[1] / "configs"
    for preset in ("tiny", "mini"):
        rec = load_recipe(preset, None, None)
        assert rec.decoder.model.steps <= 10  # the decoder samples in few steps
        assert rec.data_preset == preset
        for stage in ("tokenizer", "decoder", "ar"):
            want = yaml.safe_load((root / f"{stage}_{preset}.yaml").read_text())
            got = to_dict(getattr(rec, stage))
            for section in ("model", "train"):
                for k, v in want[section].items():
                    assert got[section][k] == v, \
                        f"recipe_{preset} {stage}.{section}.{k}={got[section][k]} != configs: {v}"
            for k, v in want.items():  # top-level fields such as the AR's t2i_ratio and caption_loss_weight
                if not isinstance(v, dict):
                    assert got[k] == v, f"recipe_{preset} {stage}.{k}={got[k]} != configs: {v}"
    # a partial section keeps the stage's own defaults for the fields it does not name
    assert load_recipe("smoke", None, None).ar.train.weight_decay == 0.05  # ARTrainConfig default, not TrainConfig 0.01
    smoke = load_recipe("smoke", None, ["ar.train.steps=2"])
    assert smoke.ar.train.steps == 2 and smoke.n_train == 48
    # the RL stage runs only where a recipe gives it steps, and it keeps the RL training-loop defaults
    assert load_recipe("tiny", None, None).rl.train.steps == 0
    assert smoke.rl.train.steps == 2 and smoke.rl.train.weight_decay == 0.0 and smoke.rl.train.min_lr_ratio == 1.0
    assert load_recipe("smoke", None, ["rl.train.steps=0"]).rl.train.steps == 0


@pytest.mark.parametrize("sets,msg", [(["ar.caption_loss_weight=0"], "caption_loss_weight"),
                                      (["ar.t2i_ratio=1.5"], "t2i_ratio"),
                                      (["select_temperatures=[0.7, 0]"], "select_temperatures"),
                                      (["select_n=0"], "select_n"), (["eval_n=0"], "eval_n"),
                                      (["tokenizer.model.levels=3"], r"max_seq_len=192 cannot hold .* 4x48 token"),
                                      (["tokenizer.model.levels=5"], "levels")])
def test_settings_that_would_fail_late_are_refused_at_load(sets, msg):
    with pytest.raises(XomniError, match=msg):
        load_recipe("mini", None, sets)


def test_bad_preset_and_key():
    with pytest.raises(XomniError, match="unknown recipe preset 'huge'; available: mini, smoke, tiny"):
        load_recipe("huge", None, None)
    with pytest.raises(XomniError, match="unknown key 'ar.nope'"):
        load_recipe("smoke", None, ["ar.nope=1"])


def test_charset():
    assert charset_of(["ab", "ba!"]) == "!ab"


def test_train_wall_s_skips_resume_gaps(tmp_path):
    assert train_wall_s(tmp_path) is None
    rows = [{"step": 10, "time": 100.0}, {"step": 20, "time": 110.0}, {"step": 20, "eval": {}},
            {"step": 30, "time": 125.0}, {"step": 40, "time": 5000.0}, {"step": 50, "time": 5010.0}]
    (tmp_path / "log.jsonl").write_text("\n".join(__import__("json").dumps(r) for r in rows) + "\nnot json\n")
    assert train_wall_s(tmp_path) == 35.0  # 10 + 15 + 10; the 4875 s gap (killed, resumed later) is left out


def _replace_weights_script():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("replace_weights", Path(__file__).resolve().parents[1] / "scripts" /
                                                  "replace_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replace_weights_script_writes_a_pipeline_with_the_new_ar(tmp_path, capsys):
    import json
    from pathlib import Path

    import torch

    from test_rl import tiny_ar, tiny_pipeline
    from xomni.checkpoint import save_model_dir
    from xomni.config import to_dict
    from xomni.pipeline import Pipeline
    mod = _replace_weights_script()
    base = tiny_pipeline()
    base.save_pretrained(tmp_path / "base", index_update={"eval": {"exact_match": 0.5}, "command": "xomni pipeline"})
    new_ar = tiny_ar(seed=1, peaky=False)
    new_ar.cfg.read_levels = 1  # a setting that changes no weight comes from the run's config.json
    save_model_dir(tmp_path / "run" / "final", new_ar, {"ar": to_dict(new_ar.cfg)})
    (tmp_path / "run" / "log.jsonl").write_text('{"step": 1, "time": 100.0}\n{"step": 2, "time": 130.0}\n')
    rc = mod.main(["--pipeline", str(tmp_path / "base"), "--ar", str(tmp_path / "run" / "final"), "--out",
                   str(tmp_path / "out"), "--stage", "ar_finetune", "xomni train ar --init X", "--run-dir",
                   str(tmp_path / "run"), "--data", "xomni data synth --seed 1"])
    assert rc == 0
    out = Pipeline.from_pretrained(tmp_path / "out")
    for k, v in new_ar.state_dict().items():
        assert torch.equal(out.ar.state_dict()[k], v), k
    assert base.ar.cfg.read_levels == 0 and out.ar.cfg.read_levels == 1
    for k, v in base.decoder.state_dict().items():
        assert torch.equal(out.decoder.state_dict()[k], v), k
    idx = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert idx["stages_run_as"]["ar_finetune"] == "xomni train ar --init X"
    assert idx["stages_run_as"]["ar_finetune_data"] == ["xomni data synth --seed 1"]
    assert idx["train_wall_s"]["ar_finetune"] == 30.0
    assert idx["eval"] is None and idx["base_eval"] == {"exact_match": 0.5}
    assert idx["base_pipeline"]["command"] == "xomni pipeline"
    # weights of another architecture: one line and exit 2, nothing written
    import dataclasses

    from xomni.ar.model import UnifiedAR
    small = UnifiedAR(dataclasses.replace(new_ar.cfg, n_layers=1))
    save_model_dir(tmp_path / "bad", small, {"ar": to_dict(small.cfg)})
    capsys.readouterr()
    assert mod.main(["--pipeline", str(tmp_path / "base"), "--ar", str(tmp_path / "bad"), "--out",
                     str(tmp_path / "out2"), "--stage", "x", "y"]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_replace_weights_script_swaps_the_decoder_with_its_config(tmp_path, capsys):
    import dataclasses
    import json

    import torch

    from test_rl import tiny_pipeline
    from xomni.decoder.model import Decoder
    from xomni.pipeline import Pipeline
    mod = _replace_weights_script()
    base = tiny_pipeline()
    base.save_pretrained(tmp_path / "base", index_update={"eval": {"exact_match": 0.5}})
    torch.manual_seed(1)
    new_dec = Decoder(dataclasses.replace(base.decoder.config, steps=3))  # other weights, other sampling steps
    new_dec.save_pretrained(tmp_path / "dec")
    assert mod.main(["--pipeline", str(tmp_path / "base"), "--decoder", str(tmp_path / "dec"), "--out",
                     str(tmp_path / "out"), "--stage", "decoder_finetune", "xomni train decoder --init X"]) == 0
    out = Pipeline.from_pretrained(tmp_path / "out")
    assert out.decoder.config.steps == 3
    for k, v in new_dec.state_dict().items():
        assert torch.equal(out.decoder.state_dict()[k], v), k
    for k, v in base.ar.state_dict().items():
        assert torch.equal(out.ar.state_dict()[k], v), k
    idx = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert idx["stages_run_as"]["decoder_finetune"] == "xomni train decoder --init X" and idx["eval"] is None
    # a second replacement keeps the first one's base: the chain leads back to the original pipeline
    assert mod.main(["--pipeline", str(tmp_path / "out"), "--decoder", str(tmp_path / "dec"), "--out",
                     str(tmp_path / "out3"), "--stage", "again", "z"]) == 0
    chain = json.loads((tmp_path / "out3" / "model_index.json").read_text())["base_pipeline"]
    assert chain["path"] == str(tmp_path / "out") and chain["base_pipeline"]["path"] == str(tmp_path / "base")
    # a decoder for another token grid: one line and exit 2, nothing written
    c = base.decoder.config
    wrong = Decoder(dataclasses.replace(c, grid=[c.grid[0] * 2, c.grid[1]], image_size=[c.image_size[0] * 2,
                                                                                         c.image_size[1]]))
    wrong.save_pretrained(tmp_path / "wrong")
    capsys.readouterr()
    assert mod.main(["--pipeline", str(tmp_path / "base"), "--decoder", str(tmp_path / "wrong"), "--out",
                     str(tmp_path / "out2"), "--stage", "x", "y"]) == 2
    assert "do not match" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_rerun_with_another_config_is_refused(tmp_path):
    """Stages whose results exist are skipped, so a rerun with a changed config would record a config for models
    it did not make: refused with one line naming the difference; the same config (other threads) continues."""
    from xomni.errors import XomniError
    from xomni.recipe import check_same_recipe, load_recipe
    cfg = load_recipe("smoke", None, [])
    check_same_recipe(cfg, tmp_path)
    assert (tmp_path / "recipe_config.json").is_file()
    check_same_recipe(load_recipe("smoke", None, ["threads=1"]), tmp_path)
    with pytest.raises(XomniError, match="another config .*data_seed"):
        check_same_recipe(load_recipe("smoke", None, ["data_seed=7"]), tmp_path)


def test_replace_weights_script_swaps_the_image_tokenizer_with_its_ar_and_decoder(tmp_path, capsys):
    """A new image tokenizer (here 2 codes per patch) comes with the AR model and decoder trained on its codes; the
    text tokenizer and provenance stay the base's. Without the AR and decoder it is refused before anything runs."""
    import pytest
    import torch

    from test_rl import tiny_pipeline
    from test_tokenizer_levels import two_level_pipeline
    from xomni.checkpoint import save_model_dir
    from xomni.config import to_dict
    from xomni.pipeline import Pipeline
    mod = _replace_weights_script()
    tiny_pipeline().save_pretrained(tmp_path / "base", index_update={"eval": {"exact_match": 0.5}})
    new = two_level_pipeline()
    new.image_tokenizer.save_pretrained(tmp_path / "tok")
    new.decoder.save_pretrained(tmp_path / "dec")
    save_model_dir(tmp_path / "ar", new.ar, {"ar": to_dict(new.ar.cfg)})
    with pytest.raises(SystemExit):
        mod.main(["--pipeline", str(tmp_path / "base"), "--image-tokenizer", str(tmp_path / "tok"), "--ar",
                  str(tmp_path / "ar"), "--out", str(tmp_path / "x"), "--stage", "s", "c"])
    with pytest.raises(SystemExit):
        mod.main(["--pipeline", str(tmp_path / "base"), "--decoder", str(tmp_path / "dec"), "--out",
                  str(tmp_path / "x"), "--stage", "s", "c", "--index", "charset=abc"])  # not JSON
    with pytest.raises(SystemExit):
        mod.main(["--pipeline", str(tmp_path / "base"), "--decoder", str(tmp_path / "dec"), "--out",
                  str(tmp_path / "x"), "--stage", "s", "c", "--index", '="sign"'])  # no key
    assert not (tmp_path / "x").exists()
    assert mod.main(["--pipeline", str(tmp_path / "base"), "--image-tokenizer", str(tmp_path / "tok"), "--ar",
                     str(tmp_path / "ar"), "--decoder", str(tmp_path / "dec"), "--out", str(tmp_path / "out"),
                     "--stage", "next_model", "xomni train ...", "--index", 'data_preset="sign"',
                     "--index", 'charset=" $0AB"']) == 0
    out = Pipeline.from_pretrained(tmp_path / "out")
    assert out.index["data_preset"] == "sign" and out.charset == " $0AB"
    assert out.grid == (4, 32) and out.image_tokenizer.levels == 2 and out.ar.cfg.image_vocab == 64
    for got, want in ((out.image_tokenizer, new.image_tokenizer), (out.ar, new.ar), (out.decoder, new.decoder)):
        for k, v in want.state_dict().items():
            assert torch.equal(got.state_dict()[k], v), k
    idx = out.index
    assert idx["stages_run_as"]["next_model"] == "xomni train ..." and idx["base_eval"]["exact_match"] == 0.5
