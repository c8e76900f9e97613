"""Request and response bodies (pydantic; they are also the OpenAPI schema at /docs).

Strict types: "n": "2" or "seed": 1.5 are refused rather than coerced, and unknown fields are refused by name, so a
misspelt option ("temprature") never silently falls back to a default.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 10            # images per request (as OpenAI's images API)
MAX_BEST_OF = 8       # candidates per image for best-of-N
MAX_STEPS = 50        # decoder steps
MAX_SEED = 2**63 - 1

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class GenerationRequest(BaseModel):
    model_config = _STRICT
    prompt: str = Field(description="What to draw, e.g. 'a white poster with the text \"OPEN\" in black bold "
                                    "sans-serif letters'. Only the model's charset (GET /v1/models).")
    n: int = Field(1, ge=1, le=MAX_N, description="Images to draw.")
    size: Optional[str] = Field(None, description="WIDTHxHEIGHT; must be the model's image size (or 'auto').")
    response_format: Literal["b64_json"] = Field("b64_json", description="Only inline PNGs are returned.")
    model: Optional[str] = Field(None, description="The served model's id (optional).")
    user: Optional[str] = Field(None, max_length=256, description="Accepted for OpenAI compatibility; unused.")
    stream: bool = Field(False, description="Server-sent events: partial previews while the tokens are sampled, "
                                            "then each final image, then 'done' with the whole response.")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Same seed, same images (default: random, "
                                                                     "echoed in the response).")
    temperature: Optional[float] = Field(None, gt=0, le=10, description="Default: the model's.")
    top_k: Optional[int] = Field(None, ge=0, le=1_000_000, description="0 = off. Default: the model's.")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="1 = off. Default: the model's.")
    min_p: Optional[float] = Field(None, ge=0, lt=1, description="Default: the model's.")
    cfg: Optional[float] = Field(None, ge=1, le=20, description="Classifier-free guidance scale (1 = off).")
    best_of: int = Field(1, ge=1, le=MAX_BEST_OF, description="Draw this many candidates per image and keep the "
                                                              "one with the highest RL reward (OCR + aesthetic).")
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="Decoder steps (default: the decoder's).")
    timeout: Optional[float] = Field(None, gt=0, le=3600, description="Seconds this request may wait in the "
                                                                      "queue (capped by the server's --timeout).")


class ImageRewards(BaseModel):
    total: float
    candidates: list[float]
    chosen: int
    model_config = ConfigDict(extra="allow")   # one value per reward component (ocr, aesthetic, ...)


class ImageData(BaseModel):
    b64_json: str
    index: int
    logprob: float = Field(description="Sum of the drawn tokens' log-probabilities under the sampling "
                                       "distribution.")
    rewards: Optional[ImageRewards] = Field(None, description="Only with best_of > 1.")


class Timings(BaseModel):
    queue_s: float
    run_s: float
    batch_rows: int = Field(description="Rows of the sampler batch this request shared.")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    model: str
    seed: int
    timings: Timings


class CaptionRequest(BaseModel):
    model_config = _STRICT
    image: str = Field(description="A PNG/JPEG/WebP/... image, base64 (a data: URL is fine).")
    num_beams: Optional[int] = Field(None, ge=1, le=8, description="Beam width (default: the model's).")
    model: Optional[str] = None
    timeout: Optional[float] = Field(None, gt=0, le=3600)


class CaptionResponse(BaseModel):
    created: int
    model: str
    text: str
    timings: Timings


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
