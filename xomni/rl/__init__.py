"""RL stage: GRPO on the AR policy with OCR / alignment / aesthetic rewards, and best-of-N with the same rewards.

    from xomni.rl import RLConfig, best_of_n, build_reward_set
    images, scores = best_of_n(pipe, prompts, n=8, reward_cfg="configs/rl_tiny.yaml", seed=0)

Training: `xomni train rl --model PIPELINE_DIR --prompts FILE --config configs/rl_tiny.yaml --out runs/rl`.
"""
from xomni.rl.bestofn import best_of_n
from xomni.rl.config import RLConfig, load_rl_config
from xomni.rl.rewards import build_reward_set

__all__ = ["RLConfig", "best_of_n", "build_reward_set", "load_rl_config"]
