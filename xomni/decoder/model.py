"""`Decoder`: token grid -> pixels by flow matching (diffusers UNet2DModel + FlowMatchEulerDiscreteScheduler).

Conditioning: a code embedding table (initialised from the tokenizer's codebook) -> residual blocks on the h x w
grid -> nearest-upsampling conv stages to the UNet's resolution -> concatenated to the noisy input. The UNet runs
on the pixel-unshuffled image (H/s x W/s x 3s^2): the same pixels at a quarter of the convolution cost for s=2.
An auxiliary head makes the conditioning map predict the clean image (`preview_weight`), so glyph shapes are learnt
by a deterministic path first; with `recon_hint` the tokenizer's own pixel-reconstruction head (copied from the
tokenizer by `init_from_tokenizer`, then trained on) is added to that preview, so training starts from the
tokenizer's reconstruction; with `prediction=x0` (default) the UNet predicts the clean image as that preview plus
a residual (output layer zero-initialised) and the scheduler receives the implied velocity (x_t - x0_hat) / sigma,
so a short training run already starts from the word shapes instead of noise.

API::

    dec = Decoder.from_pretrained(dir)
    images_B3HW = dec.decode(codes_BHW, steps=None, generator=None)   # in [-1, 1]
    pil_list = dec.decode_pil(codes_BHW)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xomni.decoder.config import DecoderConfig, check_strength
from xomni.errors import XomniError
from xomni.modeling import PretrainedMixin
from xomni.tokenizer.encoders import ResBlock
from xomni.tokenizer.images import tensor_to_pil
from xomni.tokenizer.model import ReconHead

KIND = "xomni-decoder"


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)



def _start_noise(shape: tuple, generator, dev) -> torch.Tensor:
    """Gaussian starting noise, drawn on the generator's device; per-request streams draw their rows each."""
    if isinstance(generator, (list, tuple)):
        if sum(k for _, k in generator) != shape[0]:
            raise XomniError(f"random streams cover {sum(k for _, k in generator)} rows, the batch has {shape[0]}")
        return torch.cat([torch.randn((k, *shape[1:]), generator=g, device=g.device).to(dev) for g, k in generator])
    return torch.randn(shape, generator=generator, device=generator.device if generator is not None else dev).to(dev)

class CondNet(nn.Module):
    """codes_BHW -> cond_BCHW at the UNet's resolution (+ a clean-image preview for the auxiliary loss)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.codebook_size * cfg.grid_levels, cfg.code_dim)
        self.levels = cfg.grid_levels
        n_up = int(math.log2(cfg.image_size[0] // cfg.shuffle // cfg.grid[0]))
        chans = list(cfg.cond_channels) + [cfg.cond_channels[-1]] * max(0, n_up + 1 - len(cfg.cond_channels))
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, chans[0], 1)]
        layers += [ResBlock(chans[0]) for _ in range(cfg.cond_blocks)]
        for i in range(n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
                       ResBlock(chans[i + 1])]
        layers += [_gn(chans[n_up]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.out = nn.Conv2d(chans[n_up], cfg.cond_out, 3, padding=1)
        self.preview = nn.Conv2d(chans[n_up], 3 * cfg.shuffle ** 2, 1)

        self.shuffle = cfg.shuffle
        self.hint = None
        if cfg.recon_hint:
            self.hint = ReconHead(cfg.code_dim, cfg.tokenizer_patch, cfg.tokenizer_recon_down)
            self.hint_size = tuple(cfg.image_size)

    def forward(self, codes_BHW):
        e = self.embed(codes_BHW)
        if self.levels > 1:  # a patch's codes sit side by side: sum their embeddings
            B, h, wl, D = e.shape
            e = e.view(B, h, wl // self.levels, self.levels, D).sum(3)
        e = e.permute(0, 3, 1, 2)
        h = self.net(e)
        preview = self.preview(h)
        if self.hint is not None:
            img = self.hint(e)
            if tuple(img.shape[-2:]) != self.hint_size:
                img = F.interpolate(img, size=self.hint_size, mode="bilinear", align_corners=False)
            preview = preview + (F.pixel_unshuffle(img, self.shuffle) if self.shuffle > 1 else img)
        return self.out(h), preview


class Decoder(PretrainedMixin, nn.Module):
    config_class, kind, what, train_cmd = DecoderConfig, KIND, "decoder", "xomni train decoder"

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        from diffusers import UNet2DModel
        self.config = cfg.validate()
        s = cfg.shuffle
        c_img = 3 * s * s
        n = len(cfg.unet_channels)
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if cfg.unet_attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.cond = CondNet(cfg)
        self.unet = UNet2DModel(
            sample_size=(cfg.image_size[0] // s, cfg.image_size[1] // s), in_channels=c_img + cfg.cond_out,
            out_channels=c_img, block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=math.gcd(8, cfg.unet_channels[0]),
            add_attention=cfg.unet_attention, attention_head_dim=32)
        if cfg.prediction == "x0":  # start as the preview: x0_hat = preview + 0
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)

    @property
    def vocab_size(self) -> int:
        """The token vocabulary: grid_levels x K, K = config.codebook_size (codes per level)."""
        return self.config.codebook_size * self.config.grid_levels

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid: the patch grid with each patch's grid_levels codes side by side."""
        return self.config.grid[0], self.config.grid[1] * self.config.grid_levels

    # ------------------------------------------------------------------ validation
    def check_codes(self, codes) -> torch.Tensor:
        h, w = self.grid
        V = self.vocab_size
        want = f"expected a token grid of shape [B, {h}, {w}] with ids in [0, {V}) (vocabulary size {V})"
        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(codes)
        if codes.ndim == 2 and tuple(codes.shape) == (h, w):
            codes = codes[None]
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (h, w):
            raise XomniError(f"decoder: {want}, got shape {list(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise XomniError(f"decoder: {want}, got dtype {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= V):
            raise XomniError(f"decoder: {want}, got ids in [{int(codes.min())}, {int(codes.max())}]")
        return codes.long()

    # ------------------------------------------------------------------ sampling
    def _scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.config.shift)

    def predict(self, x_t, sigma_B, cond, preview):
        """(velocity for the scheduler, clean-image estimate or None)."""
        out = self.unet(torch.cat([x_t, cond], 1), sigma_B * 1000).sample
        if self.config.prediction == "velocity":
            return out, None
        x0_hat = preview + out
        return (x_t - x0_hat) / sigma_B.clamp_min(1e-6).view(-1, 1, 1, 1), x0_hat

    @torch.no_grad()
    def decode(self, codes_BHW, steps: int | None = None, generator=None,
               strength: float | None = None) -> torch.Tensor:
        """Token grid -> images_B3HW in [-1, 1] with `steps` Euler steps (default config.steps), starting from noise
        level `strength` (default config.strength; 1 = pure noise, below 1 = the preview noised to that level).
        `generator`: a torch.Generator, or per-request streams [(generator, rows), ...] in row order (the starting
        noise of each request's rows then comes from its own generator, as in `xomni.ar.sampler.uniforms`)."""
        codes = self.check_codes(codes_BHW)
        steps = int(steps or self.config.steps)
        if steps < 1:
            raise XomniError(f"decoder steps must be >= 1, got {steps}")
        strength = check_strength(self.config.strength if strength is None else strength)
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        codes = codes.to(dev)
        s, (H, W) = self.config.shuffle, self.config.image_size
        cond, preview = self.cond(codes)
        x = _start_noise((codes.shape[0], 3 * s * s, H // s, W // s), generator, dev)
        sch = self._scheduler()
        if strength < 1.0:
            x = (1 - strength) * preview + strength * x
            sch.set_timesteps(sigmas=np.linspace(strength, strength / steps, steps).tolist(), device=dev)
        else:
            sch.set_timesteps(steps, device=dev)
        for i, t in enumerate(sch.timesteps):
            sigma = sch.sigmas[i].to(dev).expand(x.shape[0])
            v, _ = self.predict(x, sigma, cond, preview)
            x = sch.step(v, t, x).prev_sample
        self.train(was)
        return F.pixel_shuffle(x, s).clamp(-1, 1) if s > 1 else x.clamp(-1, 1)

    def decode_pil(self, codes_BHW, steps: int | None = None, generator=None,
                   strength: float | None = None) -> list:
        return tensor_to_pil(self.decode(codes_BHW, steps, generator, strength))

    @staticmethod
    def to_pil(images_B3HW) -> list:
        return tensor_to_pil(images_B3HW)

    # ------------------------------------------------------------------ training
    def forward(self, codes_BHW, images_B3HW, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Flow-matching loss: x_t = (1 - sigma) x0 + sigma noise, velocity noise - x0 (the convention of
        FlowMatchEulerDiscreteScheduler). prediction=x0: the velocity error (x0 - x0_hat) / sigma with sigma
        capped below at loss_sigma_min; prediction=velocity: plain velocity MSE. Plus the preview loss."""
        cfg = self.config
        x0 = F.pixel_unshuffle(images_B3HW, cfg.shuffle) if cfg.shuffle > 1 else images_B3HW
        B = x0.shape[0]
        if cfg.t_sampling == "logit_normal":
            sigma = torch.sigmoid(torch.randn(B, generator=gen))
        else:
            sigma = torch.rand(B, generator=gen)
        sigma = sigma.to(x0.device)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        s4 = sigma.view(B, 1, 1, 1)
        x_t = (1 - s4) * x0 + s4 * noise
        cond, preview = self.cond(codes_BHW)
        v, x0_hat = self.predict(x_t, sigma, cond, preview)
        if x0_hat is None:
            fm = F.mse_loss(v, noise - x0)
        else:
            w = s4.clamp_min(cfg.loss_sigma_min)
            fm = (((x0_hat - x0) / w) ** 2).mean()
        pv = F.mse_loss(preview, x0)
        loss = fm + cfg.preview_weight * pv
        return loss, {"flow_mse": fm.item(), "preview_mse": pv.item()}

    def init_from_tokenizer(self, tokenizer) -> None:
        """Code embeddings from the tokenizer's codebook; with recon_hint, its reconstruction head's weights."""
        cb = tokenizer.code_table()
        if tuple(cb.shape) == tuple(self.cond.embed.weight.shape):
            with torch.no_grad():
                self.cond.embed.weight.copy_(cb)
        if self.cond.hint is not None:
            if getattr(tokenizer, "recon", None) is None:
                raise XomniError("decoder recon_hint needs a tokenizer trained with a reconstruction head "
                                 "(recon_weight > 0); set model.recon_hint=false")
            self.cond.hint.load_state_dict(tokenizer.recon.state_dict())
            with torch.no_grad():  # the preview head starts at zero: preview = the tokenizer's reconstruction
                nn.init.zeros_(self.cond.preview.weight)
                nn.init.zeros_(self.cond.preview.bias)


def config_for_tokenizer(cfg: DecoderConfig, tokenizer) -> DecoderConfig:
    """The decoder config with the tokenizer's image size, grid, K and code width."""
    import dataclasses
    tc = tokenizer.config
    return dataclasses.replace(cfg, image_size=list(tc.image_size), grid=list(tc.grid),
                               codebook_size=tc.codebook_size, grid_levels=tc.levels, code_dim=tc.code_dim,
                               recon_hint=cfg.recon_hint and tc.recon_weight > 0, tokenizer_patch=tc.patch,
                               tokenizer_recon_down=tc.recon_down)


@torch.no_grad()
def grow_levels(decoder: Decoder, tokenizer, hint_from_tokenizer: bool = False) -> Decoder:
    """A decoder for `tokenizer`'s residual levels that starts as the one-level `decoder`: every weight is copied,
    level 0's code embeddings kept, and each new level's embeddings start at the tokenizer's residual codebook
    (a patch's embeddings are summed, so the sum starts near the feature the codes stand for).
    `hint_from_tokenizer`: the recon hint starts as the tokenizer's head instead (for a tokenizer whose head was
    trained on all its levels), with the preview correction at zero, as a new decoder starts."""
    import dataclasses
    if decoder.config.grid_levels != 1:
        raise XomniError(f"grow_levels starts from a one-level decoder; this one has {decoder.config.grid_levels}")
    tc = tokenizer.config
    if (tc.codebook_size, tc.code_dim, list(tc.grid)) != (decoder.config.codebook_size, decoder.config.code_dim,
                                                          list(decoder.config.grid)):
        raise XomniError("the tokenizer's K, code width or grid differ from the decoder's: it was not grown from "
                         "the decoder's tokenizer")
    new = Decoder(dataclasses.replace(decoder.config, grid_levels=tc.levels))
    state = {k: v for k, v in decoder.state_dict().items() if k != "cond.embed.weight"}
    new.load_state_dict(state, strict=False)
    K = tc.codebook_size
    table = tokenizer.code_table().to(new.cond.embed.weight.dtype)
    new.cond.embed.weight.copy_(table)
    new.cond.embed.weight[:K].copy_(decoder.cond.embed.weight)
    if hint_from_tokenizer and new.cond.hint is not None:
        new.cond.hint.load_state_dict(tokenizer.recon.state_dict())
        nn.init.zeros_(new.cond.preview.weight)
        nn.init.zeros_(new.cond.preview.bias)
    return new.eval()
