"""`ImageTokenizer`: encoder -> 1x1 projection -> cosine (L2-normalised) VQ codebook -> codes_BHW.

Training (`forward`) attaches a byte-level caption decoder to the quantised codes (the semantic objective, as
X-Omni trains its SigLIP-VQ through a language model) and optionally a small pixel-reconstruction head.

With `levels` = L > 1 (residual VQ) each patch gets L codes: level 0's cosine code, then Euclidean codes for what
the levels before left. They sit side by side in the token grid (h x w*L), level l's ids offset by l*K, so the AR
model sees a wider grid and a vocabulary of L*K, and `code_vectors` sums a patch's L vectors.

Inference API (used by the decoder and the AR model)::

    tok = ImageTokenizer.from_pretrained(dir)
    codes_BHW = tok.encode(images_B3HW)          # images in [-1, 1], long codes in [0, L*K)
    tok.grid, tok.vocab_size                     # the token grid and vocabulary (tok.config.grid: the patch grid)
    tok.code_vectors(codes_BHW) -> B x h x w x code_dim on the patch grid (unit-norm entries with one level)
    tok.reconstruct(codes_BHW) -> images_B3HW      # the auxiliary head's pixels (when recon_weight > 0)
    tok.captions(codes_BHW) -> list[str]        # greedy caption decoding from codes
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xomni.errors import XomniError
from xomni.modeling import PretrainedMixin
from xomni.tokenizer.config import TokenizerConfig
from xomni.tokenizer.encoders import ResBlock, build_encoder
from xomni.tokenizer.textdec import CaptionDecoder

KIND = "xomni-tokenizer"


class ReconHead(nn.Module):
    """Auxiliary: quantised code map -> the image at 1/recon_down resolution. Residual conv stages upsample to 1/4
    resolution; a 1x1 conv + pixel shuffle makes the last factor (cheap on CPU)."""

    def __init__(self, code_dim: int, patch: int, down: int, c: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(code_dim, c, 3, padding=1), ResBlock(c)]
        for _ in range(int(round(math.log2(max(1, patch // max(4, down)))))):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), ResBlock(c)]
        r = max(1, 4 // down)
        layers += [nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3 * r * r, 1), nn.PixelShuffle(r)]
        self.net = nn.Sequential(*layers)

    def forward(self, q_BDHW):
        return self.net(q_BDHW)


class ImageTokenizer(PretrainedMixin, nn.Module):
    config_class, kind, what, train_cmd = TokenizerConfig, KIND, "tokenizer", "xomni train tokenizer"

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize
        self.config = cfg.validate()
        gh, gw = cfg.grid
        self.encoder = build_encoder(cfg)
        self.proj = nn.Conv2d(self.encoder.out_channels, cfg.code_dim, 1)
        self.vq = VectorQuantize(dim=cfg.code_dim, codebook_size=cfg.codebook_size, use_cosine_sim=True,
                                 kmeans_init=cfg.kmeans_init, kmeans_iters=10, decay=cfg.vq_decay,
                                 threshold_ema_dead_code=cfg.dead_code_threshold,
                                 commitment_weight=cfg.commitment_weight)
        # residual levels (levels > 1): Euclidean codebooks for what the unit-norm level-0 code leaves of the
        # L2-normalised feature; their inputs are detached, so the encoder learns through level 0's straight-through
        # (with residual_branch, the branch's correction is added to that input and learns through the levels)
        self.rvq = nn.ModuleList(
            VectorQuantize(dim=cfg.code_dim, codebook_size=cfg.codebook_size, use_cosine_sim=False,
                           kmeans_init=cfg.kmeans_init, kmeans_iters=10, decay=cfg.vq_decay,
                           threshold_ema_dead_code=cfg.dead_code_threshold,
                           commitment_weight=cfg.commitment_weight if cfg.residual_branch else 0.0)
            for _ in range(cfg.levels - 1))
        if cfg.residual_branch:
            self.res_encoder = build_encoder(cfg)
            self.res_proj = nn.Conv2d(self.res_encoder.out_channels, cfg.code_dim, 1)
            nn.init.zeros_(self.res_proj.weight)  # zero correction at the start: plain residual levels
            nn.init.zeros_(self.res_proj.bias)
        if cfg.freeze_level0:
            for m in self._level0_modules():
                m.requires_grad_(False)
        self.caption_decoder = CaptionDecoder(cfg.code_dim, gh * gw, cfg.text_dim, cfg.text_layers, cfg.text_heads,
                                              cfg.max_caption_bytes + 2)
        self.recon = ReconHead(cfg.code_dim, cfg.patch, cfg.recon_down) if cfg.recon_weight > 0 else None

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """The token vocabulary: levels x K, K = config.codebook_size (codes per level)."""
        return self.config.vocab_size

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid: the patch grid with each patch's `levels` codes side by side."""
        return self.config.token_grid

    @property
    def levels(self) -> int:
        return self.config.levels

    def codebook(self) -> torch.Tensor:
        """Level 0's codebook: K x code_dim, unit norm."""
        return F.normalize(self.vq.codebook.detach().float(), dim=-1)

    def code_table(self) -> torch.Tensor:
        """One vector per token id: (levels x K) x code_dim (level 0 unit norm, then each residual codebook)."""
        return torch.cat([self.codebook()] + [vq.codebook.detach().float() for vq in self.rvq])

    def _level0_modules(self) -> tuple[nn.Module, ...]:
        return self.encoder, self.proj, self.vq

    def train(self, mode: bool = True):
        """freeze_level0: level 0's modules stay in eval mode (no EMA update, k-means or dead-code swap)."""
        super().train(mode)
        if self.config.freeze_level0:
            for m in self._level0_modules():
                m.train(False)
        return self

    # ------------------------------------------------------------------ inference
    def branch_correction(self, images_B3HW: torch.Tensor) -> torch.Tensor | None:
        """residual_branch: B x N x code_dim added to what level 0 leaves, before the residual levels (else None)."""
        if not self.config.residual_branch:
            return None
        g = self.res_proj(self.res_encoder(images_B3HW.to(self.res_proj.weight.device)))
        return g.flatten(2).transpose(1, 2)

    def features(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        """Projected features feats_BDHW (before quantisation)."""
        self._check_images(images_B3HW)
        return self.proj(self.encoder(images_B3HW.to(self.proj.weight.device)))  # CPU inputs follow the model

    @torch.no_grad()
    def encode(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        """codes_BHW (long): nearest codebook entry by cosine similarity (argmin L2 on the unit sphere).
        Pure function of the weights: no EMA update, no k-means, whatever the train/eval mode."""
        f = F.normalize(self.features(images_B3HW).float(), dim=1)
        B, D, H, W = f.shape
        f_BND = f.reshape(B, D, H * W).transpose(1, 2)
        cb = self.codebook()
        codes = [(f_BND @ cb.t()).argmax(-1)]
        r_BND = f_BND - cb[codes[0]]
        if self.config.residual_branch:
            r_BND = r_BND + self.branch_correction(images_B3HW).float()
        for level, vq in enumerate(self.rvq, 1):
            cb_l = vq.codebook.detach().float()
            c = (2 * r_BND @ cb_l.t() - cb_l.pow(2).sum(-1)).argmax(-1)  # nearest in L2 (cdist was 3x slower)
            r_BND = r_BND - cb_l[c]
            codes.append(c + level * self.config.codebook_size)
        return torch.stack(codes, -1).view(B, H, W * self.levels)  # each patch's codes side by side

    def code_vectors(self, codes_BHW: torch.Tensor) -> torch.Tensor:
        """B x h x w x code_dim on the patch grid: the sum of each patch's codes' vectors (one level: the code's)."""
        table = self.code_table()
        v = table[codes_BHW.to(table.device)]
        if self.levels > 1:
            v = v.view(*codes_BHW.shape[:-1], codes_BHW.shape[-1] // self.levels, self.levels, -1).sum(-2)
        return v

    @torch.no_grad()
    def reconstruct(self, codes_BHW: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's deterministic pixels for `codes_BHW`: images_B3HW at the tokenizer's image size
        (bilinear upsampling when recon_down > 1), clamped to [-1, 1]."""
        if self.recon is None:
            raise XomniError("this tokenizer has no reconstruction head (trained with recon_weight=0)")
        img = self.recon(self.code_vectors(codes_BHW).permute(0, 3, 1, 2))
        size = tuple(self.config.image_size)
        if tuple(img.shape[-2:]) != size:
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        return img.clamp(-1, 1)

    @torch.no_grad()
    def captions(self, codes_BHW: torch.Tensor, max_new: int | None = None) -> list[str]:
        q = self.code_vectors(codes_BHW).flatten(1, 2)
        return self.caption_decoder.generate(q, max_new)

    def _check_images(self, x: torch.Tensor) -> None:
        h, w = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (h, w):
            raise XomniError(f"tokenizer expects images of shape [B, 3, {h}, {w}] in [-1, 1], got "
                             f"{list(x.shape)} (resize with xomni.tokenizer.images.images_to_tensor)")

    # ------------------------------------------------------------------ training
    def forward(self, images_B3HW: torch.Tensor, captions_BT: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Semantic objective: caption cross-entropy from the quantised codes + VQ commitment (+ aux recon)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_level0):
            f = self.features(images_B3HW)
        B, D, H, W = f.shape
        f_BND = f.flatten(2).transpose(1, 2)
        unit_BND = F.normalize(f_BND, dim=-1)
        q, codes, commit = self.vq(f_BND)  # q_BND: level 0's unit-norm codes (straight-through)
        if self.levels > 1:
            r = (unit_BND - q).detach()
            if self.config.residual_branch:
                r = r + self.branch_correction(images_B3HW)
            for vq in self.rvq:
                q_l, _, commit_l = vq(r)
                q, r, commit = q + q_l, r - q_l.detach(), commit.sum() + commit_l.sum()
        ce, n_tok = self.caption_decoder.loss(captions_BT, q)
        loss = ce + commit.sum()
        m = {"caption_ce": ce.item(), "commit": commit.sum().item(), "tokens": float(n_tok),
             "batch_codes_used": float(codes.unique().numel())}
        if self.config.diversity_weight > 0 and not self.config.freeze_level0:
            # negative entropy of the batch-mean soft assignment: minimal when all K codes are equally used
            sim = unit_BND @ self.codebook().t()
            avg = (sim.flatten(0, 1) * self.config.diversity_temp).softmax(-1).mean(0)
            neg_ent = (avg * avg.clamp_min(1e-9).log()).sum()
            loss = loss + self.config.diversity_weight * neg_ent
            m["batch_perplexity_soft"] = float(torch.exp(-neg_ent.detach()))
        if self.recon is not None:
            target = images_B3HW
            if self.config.recon_down > 1:
                target = F.avg_pool2d(images_B3HW, self.config.recon_down)
            pred = self.recon(q.transpose(1, 2).reshape(B, D, H, W))
            mse = F.mse_loss(pred, target)
            rec = F.l1_loss(pred, target) if self.config.recon_loss == "l1" else mse
            loss = loss + self.config.recon_weight * rec
            m["recon_mse"] = mse.item()   # logged for every recon_loss, so that runs compare
        return loss, m
