"""Token-grid -> pixels diffusion decoder (diffusers UNet2DModel + flow matching), see model.py."""
from xomni.decoder.config import DecoderConfig, DecoderTrainConfig
from xomni.decoder.model import Decoder

__all__ = ["Decoder", "DecoderConfig", "DecoderTrainConfig"]
