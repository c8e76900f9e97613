"""Configs of the semantic image tokenizer: the model (`TokenizerConfig`) and its trainer (`TokenizerTrainConfig`)."""
from __future__ import annotations

import dataclasses

from xomni.cliargs import check_split
from xomni.config import check_error, field, in_range
from xomni.errors import XomniError
from xomni.train import TrainConfig

ENCODERS = ("conv", "vit", "effnet", "hf")
RECON_LOSSES = ("mse", "l1")
# The tokenizer's training-loop defaults (passed as `base` to load_config so that --set train.x keeps the rest).
TRAIN_DEFAULTS = dict(out_dir="runs/tokenizer", steps=400, batch_size=32, lr=1e-3, warmup_steps=50,
                      ckpt_every=50, log_every=10, eval_every=100)
OCR_N = 200  # default number of val images whose head reconstructions Tesseract reads (train and eval)


@dataclasses.dataclass
class TokenizerConfig:
    image_size: list[int] = field(default_factory=lambda: [64, 256],
                                  help="Input size [H, W]; other images are resized to it (warning on aspect change).")
    patch: int = field(16, help="Pixels per token side (8, 16 or 32): the grid is H/patch x W/patch.")
    encoder: str = field("conv", help="conv (trained here, default) | vit (trained here) | effnet (frozen "
                                      "EfficientNet-Lite0 ImageNet trunk) | hf (frozen local HF vision model).")
    encoder_path: str = field("", help="encoder=hf: local Hugging Face model directory (SigLIP, ViT...).")
    width: int = field(128, help="conv/vit: channels of the last encoder stage (vit: model width).")
    depth: int = field(1, help="conv: residual blocks per stage; vit: transformer layers.")
    input_scale: float = field(1.0, help="effnet/hf: upscale the input by this factor before the frozen trunk.")
    codebook_size: int = field(1024, help="K, number of codes (1,024 .. 65,536).")
    code_dim: int = field(32, help="Dimension of the L2-normalised (cosine) codebook.")
    levels: int = field(1, help="Codes per patch (residual VQ): level 0 is the cosine codebook, each further level "
                                "a Euclidean codebook of K entries for what the levels before it left. With L > 1 "
                                "each patch's L codes sit side by side, so the token grid is H/patch x "
                                "(W/patch * L) and the vocabulary L*K (level l's ids are offset by l*K).")
    residual_branch: bool = field(False, help="levels > 1: a second, trainable encoder adds a correction (zero at "
                                              "the start) to what level 0 leaves of the feature, so the residual "
                                              "codes learn what the pixels and captions need beyond the level-0 "
                                              "code; level 0's own path is unchanged.")
    freeze_level0: bool = field(False, help="Training: keep the encoder, its projection and level 0's codebook as "
                                            "loaded (--init from a one-level tokenizer), so level-0 codes stay that "
                                            "tokenizer's and an AR model trained on them still reads them; the "
                                            "residual levels (and residual_branch) learn on top.")
    vq_decay: float = field(0.95, help="EMA decay of the codebook.")
    commitment_weight: float = field(0.25, help="Commitment loss weight of the quantiser.")
    dead_code_threshold: float = field(1.0, help="Codes whose EMA cluster size falls below this are replaced by "
                                                 "batch vectors (threshold_ema_dead_code; 0 disables).")
    diversity_weight: float = field(0.1, help="Weight of the codebook diversity loss (negative entropy of the "
                                              "batch-mean soft code assignment): pushes towards uniform usage.")
    diversity_temp: float = field(100.0, help="Inverse temperature of the soft assignment (cosine similarities).")
    kmeans_init: bool = field(True, help="Initialise the codebook with k-means on the first batch.")
    text_dim: int = field(192, help="Width of the caption decoder (training objective only).")
    text_layers: int = field(2, help="Layers of the caption decoder.")
    text_heads: int = field(4, help="Attention heads of the caption decoder.")
    max_caption_bytes: int = field(192, help="Longest caption (UTF-8 bytes) the caption decoder handles.")
    recon_weight: float = field(1.0, help="Weight of the auxiliary pixel reconstruction loss (0 = off).")
    recon_down: int = field(2, help="The auxiliary reconstruction target is the image downsampled by this factor.")
    recon_loss: str = field("mse", help="Pixel loss of the reconstruction head: mse | l1 (mse reads better on the mini "
                                        "preset; the comparison is in docs/RESULTS.md).")

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid (what the encoder makes)."""
        return self.image_size[0] // self.patch, self.image_size[1] // self.patch

    @property
    def token_grid(self) -> tuple[int, int]:
        """The token grid (what the AR model writes): the patch grid with each patch's `levels` codes side by side."""
        return self.grid[0], self.grid[1] * self.levels

    @property
    def vocab_size(self) -> int:
        return self.codebook_size * self.levels

    def check(self, where: str = "model") -> "TokenizerConfig":
        """Ranges and shape constraints, checked at load (plus `validate`)."""
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise check_error(where, f"image_size must be [H, W] with positive sizes, got {self.image_size}")
        for name in ("width", "depth", "code_dim", "text_dim", "text_layers", "text_heads", "max_caption_bytes"):
            in_range(self, where, name, 1)
        in_range(self, where, "input_scale", 0, lo_open=True)
        in_range(self, where, "vq_decay", 0, 1, hi_open=True)
        for name in ("commitment_weight", "dead_code_threshold", "diversity_weight", "recon_weight"):
            in_range(self, where, name, 0)
        in_range(self, where, "diversity_temp", 0, lo_open=True)
        in_range(self, where, "recon_down", 1)
        if self.text_dim % self.text_heads:
            raise check_error(where, f"text_heads={self.text_heads} must divide text_dim={self.text_dim}")
        return self.validate()

    def validate(self) -> "TokenizerConfig":
        if len(self.image_size) != 2:
            raise XomniError(f"tokenizer image_size must be [H, W], got {self.image_size}")
        h, w = self.image_size
        if self.patch not in (8, 16, 32):
            raise XomniError(f"tokenizer patch must be 8, 16 or 32, got {self.patch}")
        if h % self.patch or w % self.patch:
            raise XomniError(f"tokenizer image_size {h}x{w} is not divisible by the patch size {self.patch}")
        if self.encoder not in ENCODERS:
            raise XomniError(f"unknown tokenizer encoder {self.encoder!r} (use one of {', '.join(ENCODERS)})")
        if self.encoder == "hf" and not self.encoder_path:
            raise XomniError("encoder=hf needs model.encoder_path (a local Hugging Face model directory)")
        if not 2 <= self.codebook_size <= 65536:
            raise XomniError(f"codebook_size must be in 2..65536, got {self.codebook_size}")
        if not 1 <= self.levels <= 4:
            raise XomniError(f"tokenizer levels (codes per patch) must be in 1..4, got {self.levels}")
        if (self.residual_branch or self.freeze_level0) and self.levels < 2:
            raise XomniError("residual_branch and freeze_level0 need residual levels (levels >= 2), "
                             f"got levels={self.levels}")
        if self.vocab_size > 65536:
            raise XomniError(f"levels x codebook_size must be at most 65,536 tokens, got {self.vocab_size}")
        if self.recon_loss not in RECON_LOSSES:
            raise XomniError(f"unknown recon_loss {self.recon_loss!r} (use one of {', '.join(RECON_LOSSES)})")
        if self.recon_weight > 0 and (self.patch % self.recon_down or self.recon_down < 1):
            raise XomniError(f"recon_down {self.recon_down} must divide the patch size {self.patch}")
        return self


@dataclasses.dataclass
class TokenizerTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS),
                               help="Shared training-loop settings (defaults: TRAIN_DEFAULTS).")
    model: TokenizerConfig = field(default_factory=TokenizerConfig, help="Tokenizer architecture.")
    data: str = field("runs/data/tiny", help="Dataset directory (xomni data synth output).")
    train_split: str = field("train", help="Split to train on.")
    val_split: str = field("val", help="Split for the final metrics (unseen words).")
    n_train: int = field(0, help="Use only the first N training samples (0 = all).")
    n_val: int = field(500, help="Samples of the val split for the final metrics (0 = all).")
    n_ocr: int = field(OCR_N, help="Final metrics: Tesseract reads the reconstruction head's pixels (and the "
                                 "originals) for this many val images (0 = skip).")

    def check(self, where: str = "") -> "TokenizerTrainConfig":
        for name in ("n_train", "n_val", "n_ocr"):
            in_range(self, where, name, 0)
        check_split(self.train_split, "config train_split")
        check_split(self.val_split, "config val_split")
        return self
