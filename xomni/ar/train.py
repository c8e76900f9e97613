"""SFT of the unified AR model on (caption, token grid) pairs: text -> image and image -> text, trained together."""
from __future__ import annotations

import dataclasses

import torch

from xomni.ar.model import ARConfig, UnifiedAR
from xomni.config import field
from xomni.errors import XomniError
from xomni.train import TrainConfig


@dataclasses.dataclass
class ARTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/ar", steps=3000, batch_size=32,
                                                                   lr=1e-3, warmup_steps=100, weight_decay=0.05),
                               help="Shared training-loop settings.")
    model: ARConfig = field(default_factory=ARConfig, help="Model architecture.")
    t2i_ratio: float = field(0.8, help="Fraction of sequences that are text->image; the rest are image->text "
                                       "(captioning with the same weights).")
    uncond_prob: float = field(0.1, help="Probability of dropping the prompt of a text->image sequence, so that "
                                         "classifier-free guidance has an unconditional model.")
    caption_loss_weight: float = field(1.0, help="Weight w of caption (image->text) tokens against image tokens in "
                                                 "the loss, (sum image CE + w x sum text CE) / (n_image + w x n_text); "
                                                 "1 = the plain token mean. Most caption tokens are the easy template "
                                                 "words, so the hard ones (the quoted text) get little of a plain mean.")
    text_tokenizer: str = field("byte", help="'byte' or a local Hugging Face tokenizer directory.")

    def check(self, where: str = "") -> "ARTrainConfig":
        return self.validate()

    def validate(self) -> "ARTrainConfig":
        if not 0 <= self.t2i_ratio <= 1 or not 0 <= self.uncond_prob < 1:
            raise XomniError("t2i_ratio must be in [0, 1] and uncond_prob in [0, 1)")
        if not self.caption_loss_weight > 0:
            raise XomniError(f"caption_loss_weight must be > 0, got {self.caption_loss_weight}")
        return self


def make_sequences(batch: list[dict], model: UnifiedAR, text_tok, cfg: ARTrainConfig, gen: torch.Generator):
    """Right-padded ids/targets/mask for a batch; the mode of each row is drawn from `gen` (reproducible)."""
    lay = model.layout
    rows, tgts = [], []
    modes = torch.rand(len(batch), generator=gen)
    drops = torch.rand(len(batch), generator=gen)
    n_img = 0
    for b, m, d in zip(batch, modes.tolist(), drops.tolist()):
        cap = text_tok.encode(b["caption"], add_special_tokens=False)
        if m < cfg.t2i_ratio:
            seq, start = lay.t2i_sequence([] if d < cfg.uncond_prob else cap, b["codes"])
            tgt = [-100] * len(seq)
            n = b["codes"].numel()
            tgt[start - 1:start - 1 + n] = seq[start:start + n]  # predict image tokens only
            n_img += n
        else:
            seq, start = lay.i2t_sequence(b["codes"], cap)
            tgt = [-100] * len(seq)
            tgt[start - 1:len(seq) - 1] = seq[start:]  # predict caption + eos
        rows.append(seq[:-1] if len(seq) > 1 else seq)
        tgts.append(tgt[:-1] if len(tgt) > 1 else tgt)
    L = max(len(r) for r in rows)
    if L > model.cfg.max_seq_len:
        raise XomniError(f"a training sequence has {L} tokens, more than model.max_seq_len={model.cfg.max_seq_len}")
    ids = torch.full((len(rows), L), lay.pad_id, dtype=torch.long)
    targets = torch.full((len(rows), L), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, tgts)):
        ids[i, :len(r)] = torch.tensor(r)
        targets[i, :len(t)] = torch.tensor(t)
        mask[i, :len(r)] = 1
    return ids, targets, mask


def flops_per_token(model: UnifiedAR, seq_len: int) -> float:
    """6 x non-embedding params + 12 x layers x seq x d_model (the usual dense-transformer estimate)."""
    bb = model.backbone.config
    return 6 * model.num_params(non_embedding=True) + 12 * bb.num_hidden_layers * seq_len * bb.hidden_size


def build_loss_fn(model: UnifiedAR, text_tok, cfg: ARTrainConfig):
    def loss_fn(m, batch, gen):
        ids, targets, mask = make_sequences(batch, model, text_tok, cfg, gen)
        loss, metrics = m(ids, targets, attention_mask=mask, text_weight=cfg.caption_loss_weight)
        metrics["tokens"] = float(mask.sum())
        return loss, metrics
    return loss_fn
