"""Token-grid -> pixels diffusion decoder (diffusers UNet2DModel + flow matching), see model.py.

Names are imported lazily so that the CLI does not load torch up front.
"""
__all__ = ["Decoder", "DecoderConfig", "DecoderTrainConfig"]


def __getattr__(name):
    if name == "Decoder":
        from xomni.decoder.model import Decoder
        return Decoder
    if name in ("DecoderConfig", "DecoderTrainConfig"):
        from xomni.decoder import config
        return getattr(config, name)
    raise AttributeError(name)
