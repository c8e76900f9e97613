"""Per-request random streams inside a merged batch, so that batching across clients changes nobody's images.

The sampler (`xomni.ar.sampler.sample_images`) and the decoder (`Decoder.decode`) each draw a batch's randomness
from one generator, so a row's draws would depend on which other requests share its batch. Neither takes per-row
generators yet, so this module wraps them:
- `per_request_uniforms`: while active, the sampler's per-step uniforms (`xomni.ar.sampler.uniforms`, one per row)
  are drawn request by request, each from the request's own generator;
- `decode_seeded`: `Decoder.decode` with the starting noise drawn request by request.
Each request's generators are seeded exactly as `Pipeline.generate_codes` / `Pipeline.decode` seed theirs, so a
request gets what `Pipeline(prompt, num_images=n, seed=seed)` gives alone (up to float rounding of batched
matmuls); the serve tests check this against the pipeline itself.
"""
from __future__ import annotations

import contextlib
import threading

import torch

_swap_lock = threading.Lock()
DECODE_SEED_OFFSET = 1_000_003   # Pipeline.decode seeds its generator with seed + this


@contextlib.contextmanager
def per_request_uniforms(streams: list[tuple[torch.Generator, int]]):
    """`streams`: (generator, rows) per request, in batch row order."""
    from xomni.ar import sampler
    with _swap_lock:
        original = sampler.uniforms

        def uniforms(n, generator, device):
            u = torch.cat([torch.rand(k, generator=g) for g, k in streams])
            if len(u) != n:   # the sampler's batch is not the one set up here: fail rather than mis-seed
                raise RuntimeError(f"the sampler asked for {n} uniforms, the batch has {len(u)} rows")
            return u.to(device)

        sampler.uniforms = uniforms
        try:
            yield
        finally:
            sampler.uniforms = original


@torch.no_grad()
def decode_seeded(decoder, codes_BHW: torch.Tensor, seeds: list[tuple[int, int]], steps: int | None = None) -> list:
    """`Decoder.decode_pil` for a merged batch; `seeds`: (seed, rows) per request in row order: each request's
    starting noise comes from its own seed, so its images do not depend on what it was batched with."""
    s, (H, W) = decoder.config.shuffle, decoder.config.image_size
    noise = torch.cat([torch.randn((k, 3 * s * s, H // s, W // s),
                                   generator=torch.Generator().manual_seed(seed + DECODE_SEED_OFFSET))
                       for seed, k in seeds])
    return decoder.decode_pil(codes_BHW, steps=steps, noise=noise)
