"""The prompt pool of RL: draw prompts that the current policy gets partly right (DAPO-style dynamic sampling).

A group whose G rollouts all read right (or all wrong) has zero advantage everywhere and teaches nothing. The pool
keeps, per prompt, the rollouts drawn and how many read exactly right, and draws each step's prompts without
replacement with weight p(1 - p) + floor, where p is the prompt's pass rate shrunk towards the running mean pass
rate m by `prior` pseudo-rollouts: p = (passes + prior m) / (draws + prior). Unseen prompts get m(1 - m). The state
is two integer lists, saved in every checkpoint (`state_dict`), so a resumed run draws exactly the same prompts.
"""
from __future__ import annotations

import torch

from xomni.errors import XomniError


class PromptPool:
    def __init__(self, n: int, prior: float = 2.0, floor: float = 0.02):
        if n < 1:
            raise XomniError("the prompt pool needs at least one prompt")
        self.draws, self.passes = [0] * n, [0] * n
        self.prior, self.floor = float(prior), float(floor)

    def mean_pass(self) -> float:
        d = sum(self.draws)
        return sum(self.passes) / d if d else 0.5

    def pass_rates(self) -> torch.Tensor:
        m = self.mean_pass()
        d = torch.tensor(self.draws, dtype=torch.float64)
        s = torch.tensor(self.passes, dtype=torch.float64)
        return (s + self.prior * m) / (d + self.prior)

    def weights(self) -> torch.Tensor:
        p = self.pass_rates()
        return p * (1 - p) + self.floor

    def draw(self, k: int, gen: torch.Generator) -> list[int]:
        """k distinct prompt indices (all of them, in weighted order, when k >= the pool)."""
        w = self.weights()
        k = min(k, len(w))
        return torch.multinomial(w, k, replacement=False, generator=gen).tolist()

    def update(self, idx: list[int], passed: list[int], G: int) -> None:
        """idx: one prompt index per group; passed: how many of its G rollouts read exactly right."""
        for i, s in zip(idx, passed):
            if not 0 <= s <= G:
                raise XomniError(f"prompt pool: {s} passes out of {G} rollouts")
            self.draws[i] += G
            self.passes[i] += int(s)

    def state_dict(self) -> dict:
        return {"draws": list(self.draws), "passes": list(self.passes)}

    def load_state_dict(self, d: dict) -> None:
        if len(d.get("draws", ())) != len(self.draws) or len(d.get("passes", ())) != len(self.passes):
            raise XomniError(f"the checkpoint's prompt pool has {len(d.get('draws', ()))} prompts, this run "
                             f"{len(self.draws)}: resume with the same prompts")
        self.draws, self.passes = [int(x) for x in d["draws"]], [int(x) for x in d["passes"]]
