"""Configuration and token layout of X-Omni's own architecture (the released X-Omni-En / -Zh / -SFT / -PT models).

X-Omni (X-Omni-Team, arXiv 2507.22058) is a Qwen2.5 decoder whose transformer stack has three parts: the first
`num_mm_adap_layers` blocks and the last `num_mm_head_layers` blocks only update positions that hold image tokens
(text positions pass through them unchanged, though their keys/values are still attended to), the blocks in
between are the language model's own. Text and image tokens have separate embedding tables, final norms and
output heads. The official `config.json` (model_type "x-omni") is a Qwen2 config plus
num_mm_adap_layers, num_mm_head_layers, mm_vocab_size, image_vocab_size, mm_special_tokens and vision_config.

Token ids are the official tokenizer's: ids < vocab_size are text (incl. <SOM>, <EOM>, <IMAGE> when the tokenizer
puts them there), id vocab_size + k is image code k (<MM-Token-k>); ids >= vocab_size are "multimodal" positions.
The image header is written the official way, `<SOM>{h} {w}<IMAGE>`, i.e. digit tokens and a space token.
"""
from __future__ import annotations

import dataclasses

from xomni.ar.vocab import VocabLayout
from xomni.config import field
from xomni.errors import XomniError

FORMAT = "xomni.x-omni"    # the manifest's format tag of a directory written by `xomni convert x-omni`
MANIFEST = "xomni.json"


@dataclasses.dataclass(frozen=True)
class XOmniLayout(VocabLayout):
    """xomni's sequence layout (xomni.ar.vocab) on X-Omni's token ids: specials and the size header are real
    tokenizer tokens, image code k is id n_text + k (n_text = the official `vocab_size`)."""
    som_id: int = 0
    eom_id: int = 0
    img_id: int = 0
    digit_ids: tuple[int, ...] = tuple(range(10))
    space_id: int = 0
    mm_vocab: int = 0     # rows of the image-side table (>= image_vocab)

    @property
    def som(self) -> int:
        return self.som_id

    @property
    def eom(self) -> int:
        return self.eom_id

    @property
    def img(self) -> int:
        return self.img_id

    def size_token(self, k: int) -> int:
        raise XomniError("X-Omni writes the image size as digits (<SOM>h w<IMAGE>); there are no size tokens")

    def _digits(self, k: int) -> list[int]:
        if not 1 <= k <= self.max_grid:
            raise ValueError(f"grid size {k} outside 1..{self.max_grid}")
        return [self.digit_ids[int(c)] for c in str(k)]

    def image_header(self, h: int, w: int) -> list[int]:
        return [self.som] + self._digits(h) + [self.space_id] + self._digits(w) + [self.img]

    @property
    def n_textside(self) -> int:
        return self.n_text

    @property
    def image_offset(self) -> int:
        return self.n_text

    @property
    def total(self) -> int:
        return self.n_text + max(self.mm_vocab, self.image_vocab)


@dataclasses.dataclass
class XOmniARConfig:
    vocab_size: int = field(152064, help="Text-side table size (official vocab_size); image code k is id "
                                         "vocab_size + k.")
    mm_vocab_size: int = field(16448, help="Rows of the image-side embedding table and head.")
    image_vocab_size: int = field(16384, help="Image codes the image head may emit (the SigLIP-VQ codebook).")
    hidden_size: int = field(3584, help="Model width.")
    intermediate_size: int = field(18944, help="SwiGLU hidden size.")
    num_hidden_layers: int = field(36, help="All transformer blocks, image-only ones included.")
    num_attention_heads: int = field(28, help="Attention heads.")
    num_key_value_heads: int = field(4, help="Key/value heads (grouped-query attention).")
    head_dim: int = field(0, help="Head width (0 = hidden_size / num_attention_heads).")
    num_mm_adap_layers: int = field(4, help="Leading blocks that only update image positions.")
    num_mm_head_layers: int = field(4, help="Trailing blocks that only update image positions.")
    rms_norm_eps: float = field(1e-6, help="RMSNorm epsilon.")
    rope_theta: float = field(1000000.0, help="RoPE base.")
    max_position_embeddings: int = field(32768, help="RoPE positions of the backbone config.")
    tie_word_embeddings: bool = field(False, help="Text head tied to the text embedding table.")
    max_seq_len: int = field(8192, help="Longest sequence xomni's sampler and trainer accept.")
    bos_id: int = field(151643, help="Token xomni puts first in every row (X-Omni itself has no BOS; "
                                     "<|endoftext|> by default).")
    eos_id: int = field(151645, help="End of a caption (<|im_end|>).")
    pad_id: int = field(151643, help="Padding (<|endoftext|>).")
    som_id: int = field(0, help="<SOM> token id.")
    eom_id: int = field(0, help="<EOM> token id.")
    img_id: int = field(0, help="<IMAGE> token id.")
    digit_ids: list = field(default_factory=lambda: list(range(15, 25)), help="Ids of the tokens '0'..'9'.")
    space_id: int = field(220, help="Id of the single-space token between height and width.")
    max_grid: int = field(128, help="Largest grid height/width accepted in a header.")

    # ---------------------------------------------------------------- xomni's AR interface (UnifiedAR's cfg)
    @property
    def n_text(self) -> int:
        return self.vocab_size

    @property
    def image_vocab(self) -> int:
        return self.image_vocab_size

    @property
    def levels(self) -> int:
        return 1

    @property
    def lm_layers(self) -> range:
        return range(self.num_mm_adap_layers, self.num_hidden_layers - self.num_mm_head_layers)

    def head_width(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def check(self, where: str = "X-Omni config") -> "XOmniARConfig":
        def bad(msg):
            return XomniError(f"{where}: {msg}")
        for name in ("vocab_size", "mm_vocab_size", "image_vocab_size", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                     "max_seq_len", "max_grid"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("num_mm_adap_layers", "num_mm_head_layers", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"{name} must be an integer >= 0, got {v!r}")
        if self.num_mm_adap_layers + self.num_mm_head_layers > self.num_hidden_layers:
            raise bad(f"num_mm_adap_layers + num_mm_head_layers = {self.num_mm_adap_layers + self.num_mm_head_layers}"
                      f" exceeds num_hidden_layers = {self.num_hidden_layers}")
        if self.image_vocab_size > self.mm_vocab_size:
            raise bad(f"image_vocab_size {self.image_vocab_size} exceeds mm_vocab_size {self.mm_vocab_size}")
        if not self.head_dim and self.hidden_size % self.num_attention_heads:
            raise bad(f"num_attention_heads {self.num_attention_heads} must divide hidden_size {self.hidden_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise bad(f"num_key_value_heads {self.num_key_value_heads} must divide num_attention_heads "
                      f"{self.num_attention_heads}")
        if self.head_width() % 2:
            raise bad(f"the head width {self.head_width()} must be even (RoPE)")
        if len(self.digit_ids) != 10:
            raise bad(f"digit_ids must list the ids of '0'..'9', got {len(self.digit_ids)} ids")
        total = self.vocab_size + self.mm_vocab_size
        for name in ("bos_id", "eos_id", "pad_id", "som_id", "eom_id", "img_id", "space_id"):
            v = getattr(self, name)
            if not 0 <= v < total:
                raise bad(f"{name} {v} is outside the vocabulary 0..{total - 1}")
        for v in self.digit_ids:
            if not 0 <= v < total:
                raise bad(f"digit id {v} is outside the vocabulary 0..{total - 1}")
        return self

    def layout(self) -> XOmniLayout:
        return XOmniLayout(n_text=self.vocab_size, image_vocab=self.image_vocab_size, max_grid=self.max_grid,
                           bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, levels=1,
                           som_id=self.som_id, eom_id=self.eom_id, img_id=self.img_id,
                           digit_ids=tuple(self.digit_ids), space_id=self.space_id, mm_vocab=self.mm_vocab_size)

    def qwen2_config(self):
        """The transformers Qwen2 config of the blocks (model_type 'x-omni', so that code paths written for a
        plain Qwen2 backbone, like xomni's static-KV fast decoder, do not take it for one)."""
        kw = dict(vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                  num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
                  num_key_value_heads=self.num_key_value_heads, rms_norm_eps=self.rms_norm_eps,
                  rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings,
                  tie_word_embeddings=self.tie_word_embeddings, use_sliding_window=False, attention_dropout=0.0)
        if self.head_dim:
            kw["head_dim"] = self.head_dim
        hf = _blocks_config_class()(**kw)
        hf._attn_implementation = "sdpa"
        return hf

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "X-Omni config") -> "XOmniARConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise XomniError(f"{where}: unknown key {unknown[0]!r}")
        return cls(**d).check(where)


_BLOCKS_CONFIG = []


def _blocks_config_class():
    if not _BLOCKS_CONFIG:
        from transformers import Qwen2Config

        class XOmniBlocksConfig(Qwen2Config):
            model_type = "x-omni"
        _BLOCKS_CONFIG.append(XOmniBlocksConfig)
    return _BLOCKS_CONFIG[0]


# keys of the official config.json this architecture reads, with the official XOmniConfig / Qwen2Config defaults
OFFICIAL_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OFFICIAL_DEFAULTS = {"num_mm_adap_layers": 4, "num_mm_head_layers": 4, "mm_vocab_size": 16448,
                     "image_vocab_size": 16384, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                     "max_position_embeddings": 32768, "tie_word_embeddings": False, "head_dim": 0,
                     "num_key_value_heads": None}


def from_official_config(cfg: dict, token_ids: dict, where: str = "config.json") -> XOmniARConfig:
    """XOmniARConfig from the official config.json dict and the token ids read from the official tokenizer."""
    if cfg.get("model_type") != "x-omni":
        raise XomniError(f"{where}: model_type is {cfg.get('model_type')!r}, expected 'x-omni' (an X-Omni checkpoint)")
    for k in OFFICIAL_REQUIRED:
        if k not in cfg:
            raise XomniError(f"{where}: missing key {k!r}")
    if cfg.get("use_sliding_window"):
        raise XomniError(f"{where}: use_sliding_window=true is not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise XomniError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (X-Omni uses silu)")
    if cfg.get("rope_scaling"):
        raise XomniError(f"{where}: rope_scaling {cfg['rope_scaling']!r} is not supported")
    v = {k: cfg.get(k, d) for k, d in OFFICIAL_DEFAULTS.items()}
    v["head_dim"] = v["head_dim"] or 0
    if v["num_key_value_heads"] is None:
        v["num_key_value_heads"] = cfg["num_attention_heads"]
    ar = XOmniARConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                       intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                       num_attention_heads=cfg["num_attention_heads"], rope_theta=float(v.pop("rope_theta")),
                       max_seq_len=min(int(v["max_position_embeddings"]), 8192), **v, **token_ids)
    return ar.check(where)
