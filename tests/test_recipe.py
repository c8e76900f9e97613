"""Recipe presets load into their config dataclasses, and bad presets/keys fail with one clear line."""
import pytest

from xomni.errors import XomniError
from xomni.recipe import charset_of, load_recipe


def test_presets_load_with_their_stage_settings():
    tiny = load_recipe("tiny", None, None)
    assert tiny.tokenizer.model.codebook_size == 1024 and tiny.tokenizer.model.patch == 16
    assert tiny.decoder.model.steps <= 10  # the decoder samples in few steps
    assert tiny.ar.model.n_layers == 6 and tiny.ar.train.steps == 3000
    # a partial section keeps the stage's own defaults for the fields it does not name
    assert load_recipe("smoke", None, None).ar.train.weight_decay == 0.05  # ARTrainConfig default, not TrainConfig 0.01
    smoke = load_recipe("smoke", None, ["ar.train.steps=2"])
    assert smoke.ar.train.steps == 2 and smoke.n_train == 48


def test_bad_preset_and_key():
    with pytest.raises(XomniError, match="unknown recipe preset 'huge'; available: smoke, tiny"):
        load_recipe("huge", None, None)
    with pytest.raises(XomniError, match="unknown key 'ar.nope'"):
        load_recipe("smoke", None, ["ar.nope=1"])


def test_charset():
    assert charset_of(["ab", "ba!"]) == "!ab"
