"""Semantic image tokenizer: encoder -> projection -> cosine VQ codebook -> codes_BHW (see model.py)."""
from xomni.tokenizer.config import TokenizerConfig, TokenizerTrainConfig
from xomni.tokenizer.model import ImageTokenizer

__all__ = ["ImageTokenizer", "TokenizerConfig", "TokenizerTrainConfig"]
