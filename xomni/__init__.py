"""xomni: discrete-token autoregressive text-to-image generation (X-Omni style), trainable on a laptop CPU."""
__version__ = "0.1.0"

from xomni.errors import XomniError  # noqa: F401
