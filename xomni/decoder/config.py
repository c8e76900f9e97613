"""Configs of the token-grid -> pixels diffusion decoder (`DecoderConfig`) and its trainer (`DecoderTrainConfig`)."""
from __future__ import annotations

import dataclasses

from xomni.cliargs import check_split
from xomni.config import check_error, field, in_range
from xomni.errors import XomniError
from xomni.train import TrainConfig

TRAIN_DEFAULTS = dict(out_dir="runs/decoder", steps=3000, batch_size=16, lr=5e-4, warmup_steps=100,
                      ckpt_every=200, log_every=10)


def check_strength(strength: float) -> float:
    """The sampler's start noise level as a float in (0, 1]; XomniError otherwise."""
    if not 0.0 < float(strength) <= 1.0:
        raise XomniError(f"decoder strength must be in (0, 1], got {strength}")
    return float(strength)


@dataclasses.dataclass
class DecoderConfig:
    image_size: list[int] = field(default_factory=lambda: [64, 256], help="Output size [H, W] (from the tokenizer).")
    grid: list[int] = field(default_factory=lambda: [4, 16], help="Patch grid [h, w] (from the tokenizer).")
    grid_levels: int = field(1, help="Codes per patch (from the tokenizer's `levels`): the token grid is "
                                     "grid[0] x (grid[1] * grid_levels), and a patch's codes' embeddings are summed.")
    codebook_size: int = field(1024, help="Codes per level K (from the tokenizer); the vocabulary is "
                                          "grid_levels x K.")
    code_dim: int = field(32, help="Code embedding width (initialised from the tokenizer's codebook).")
    cond_channels: list[int] = field(default_factory=lambda: [128, 96, 64],
                                     help="Conditioning upsampler widths: grid level, then one per 2x upsampling "
                                          "(missing levels repeat the last).")
    cond_blocks: int = field(2, help="Residual blocks at the grid level of the conditioning network.")
    cond_out: int = field(32, help="Channels of the conditioning map concatenated to the noisy input.")
    shuffle: int = field(4, help="Pixel-(un)shuffle factor: the UNet runs at H/s x W/s with 3*s*s channels.")
    unet_channels: list[int] = field(default_factory=lambda: [48, 96, 192], help="UNet2DModel block_out_channels.")
    layers_per_block: int = field(1, help="UNet2DModel layers_per_block.")
    unet_attention: bool = field(False, help="Self-attention in the lowest UNet level.")
    steps: int = field(8, help="Default sampling steps (flow matching, Euler).")
    strength: float = field(1.0, help="Noise level the sampler starts from, in (0, 1]: 1 = pure noise; below 1 the "
                                       "sampler starts from the deterministic preview noised to this level (as "
                                       "diffusers' img2img strength) and runs `steps` steps from there.")
    shift: float = field(1.0, help="FlowMatchEulerDiscreteScheduler shift (timestep schedule).")
    preview_weight: float = field(0.5, help="Weight of the auxiliary loss making the conditioning map predict the "
                                            "clean image (a deterministic preview; speeds up learning glyphs).")
    t_sampling: str = field("logit_normal", help="Training noise levels: logit_normal | uniform.")
    prediction: str = field("x0", help="x0: the UNet predicts the clean image as preview + residual (zero-init "
                                       "output; the scheduler gets v = (x_t - x0_hat) / sigma) | velocity: the UNet "
                                       "predicts v = noise - x0 directly.")
    recon_hint: bool = field(True, help="Add the tokenizer's pixel-reconstruction head (copied from the tokenizer, "
                                        "then trained on) to the preview, so the decoder starts from the tokenizer's "
                                        "deterministic reconstruction and the UNet learns the rest.")
    tokenizer_patch: int = field(16, help="recon_hint: the tokenizer's patch size (from the tokenizer).")
    tokenizer_recon_down: int = field(1, help="recon_hint: the tokenizer's reconstruction downsampling factor "
                                              "(from the tokenizer).")
    loss_sigma_min: float = field(0.2, help="prediction=x0: the loss is ((x0_hat - x0) / max(sigma, this))^2, a "
                                            "velocity loss with its low-noise weight capped.")

    def check(self, where: str = "model") -> "DecoderConfig":
        """Ranges and non-empty channel lists, checked at load; `validate` adds the grid/size constraints once the
        tokenizer has set them."""
        for name, v in (("image_size", self.image_size), ("grid", self.grid)):
            if len(v) != 2 or min(v) < 1:
                raise check_error(where, f"{name} must be two positive sizes, got {v}")
        for name, v in (("unet_channels", self.unet_channels), ("cond_channels", self.cond_channels)):
            if not v or min(v) < 1:
                raise check_error(where, f"{name} must be a non-empty list of positive widths, got {v}")
        for name in ("grid_levels", "code_dim", "cond_out", "layers_per_block", "steps", "tokenizer_patch",
                     "tokenizer_recon_down"):
            in_range(self, where, name, 1)
        in_range(self, where, "codebook_size", 2)
        in_range(self, where, "cond_blocks", 0)
        in_range(self, where, "strength", 0, 1, lo_open=True)
        in_range(self, where, "shift", 0, lo_open=True)
        in_range(self, where, "preview_weight", 0)
        in_range(self, where, "loss_sigma_min", 0, lo_open=True)
        if self.shuffle not in (1, 2, 4):
            raise check_error(where, f"shuffle must be 1, 2 or 4, got {self.shuffle}")
        return self

    def validate(self) -> "DecoderConfig":
        self.check()
        h, w = self.image_size
        if self.shuffle not in (1, 2, 4):
            raise XomniError(f"decoder shuffle must be 1, 2 or 4, got {self.shuffle}")
        down = 2 ** (len(self.unet_channels) - 1)
        if h % (self.shuffle * down) or w % (self.shuffle * down):
            raise XomniError(f"decoder image_size {h}x{w} must be divisible by shuffle x 2^(levels-1) = "
                             f"{self.shuffle * down}")
        if h % self.grid[0] or w % self.grid[1]:
            raise XomniError(f"decoder image_size {h}x{w} is not a multiple of the grid {self.grid}")
        ratio = h // self.shuffle // self.grid[0]
        if ratio < 1 or ratio & (ratio - 1) or ratio * self.grid[1] * self.shuffle != w:
            raise XomniError("decoder: (image_size / shuffle) / grid must be the same power of 2 on both axes")
        if self.prediction not in ("x0", "velocity"):
            raise XomniError(f"prediction must be x0 or velocity, got {self.prediction!r}")
        if self.t_sampling not in ("logit_normal", "uniform"):
            raise XomniError(f"t_sampling must be logit_normal or uniform, got {self.t_sampling!r}")
        check_strength(self.strength)
        if self.steps < 1:
            raise XomniError(f"decoder steps must be >= 1, got {self.steps}")
        return self


@dataclasses.dataclass
class DecoderTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS),
                               help="Shared training-loop settings (defaults: TRAIN_DEFAULTS).")
    model: DecoderConfig = field(default_factory=DecoderConfig, help="Decoder architecture (the grid, K and "
                                                                     "image size are taken from the tokenizer).")
    tokenizer: str = field("runs/tokenizer", help="Trained tokenizer directory (its codes condition the decoder).")
    data: str = field("runs/data/tiny", help="Dataset directory (xomni data synth output).")
    train_split: str = field("train", help="Split to train on.")
    val_split: str = field("val", help="Split for the final OCR check (unseen words).")
    n_train: int = field(0, help="Use only the first N training samples (0 = all).")
    n_val: int = field(200, help="Val samples reconstructed and read by Tesseract at the end (0 = skip).")

    def check(self, where: str = "") -> "DecoderTrainConfig":
        in_range(self, where, "n_train", 0)
        in_range(self, where, "n_val", 0)
        check_split(self.train_split, "config train_split")
        check_split(self.val_split, "config val_split")
        return self
