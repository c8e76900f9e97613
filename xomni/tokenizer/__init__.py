"""Semantic image tokenizer: encoder -> projection -> cosine VQ codebook -> codes_BHW (see model.py).

Names are imported lazily so that `xomni --help` and the CLI do not load torch up front.
"""
__all__ = ["ImageTokenizer", "TokenizerConfig", "TokenizerTrainConfig"]


def __getattr__(name):
    if name == "ImageTokenizer":
        from xomni.tokenizer.model import ImageTokenizer
        return ImageTokenizer
    if name in ("TokenizerConfig", "TokenizerTrainConfig"):
        from xomni.tokenizer import config
        return getattr(config, name)
    raise AttributeError(name)
