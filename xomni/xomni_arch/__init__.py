"""X-Omni's own architecture (the released X-Omni models) in xomni: XOmniAR (Qwen2.5 blocks with image-only blocks
before and after the language model's, separate image embedding / norm / head), the SigLIP-VQ quantiser and the
FLUX decoder with its SigLIP adapter. Checkpoints come from `xomni convert x-omni` (docs/XOMNI.md)."""
