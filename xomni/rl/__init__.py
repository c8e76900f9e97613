"""RL stage: GRPO on the AR policy with OCR / alignment / aesthetic rewards, and best-of-N with the same rewards.

    from xomni.rl import RLConfig, best_of_n, build_reward_set
    images, scores = best_of_n(pipe, prompts, n=8, reward_cfg="configs/rl_tiny.yaml", seed=0)

Training: `xomni train rl --model PIPELINE_DIR --prompts FILE --config configs/rl_tiny.yaml --out runs/rl`.
Heavy modules (torch) are imported by the submodules, not here.
"""
from __future__ import annotations

__all__ = ["RLConfig", "best_of_n", "build_reward_set", "load_rl_config"]


def __getattr__(name):
    if name in ("RLConfig", "load_rl_config"):
        from xomni.rl import config
        return getattr(config, name)
    if name == "best_of_n":
        from xomni.rl.bestofn import best_of_n
        return best_of_n
    if name == "build_reward_set":
        from xomni.rl.rewards import build_reward_set
        return build_reward_set
    raise AttributeError(name)
