"""Serving a ``Text2ImagePipeline`` to many clients, without any web framework.

What ``stackgan2 serve`` (cli/serve.py, FastAPI + uvicorn) needs that is not HTTP plumbing lives here,
so it is tested without a server and reusable behind another front end:

- request limits and parsing (``parse_json_body``, ``parse_image_request``): every way a request can be
  wrong becomes a ``RequestError`` carrying one message that names the problem and an HTTP status;
  ``image_request_schema`` describes the same body as JSON Schema, for the server's OpenAPI document;
- ``BatchingGenerator``: one worker thread owns the model; requests queued while it computes are
  stacked into its next pass (up to ``max_batch`` images: one generator forward on an accelerator,
  one forward per image on the CPU, see ``Text2ImagePipeline.rows_per_forward``). Each request's prompt is
  encoded on its own and its noise comes from its own seeds (``Text2ImagePipeline.render``), so a
  response is the same bytes whether the request was served alone or beside others (AttnGAN models:
  each request's word features and mask are padded to ``text.max_words`` slots, the mask covering
  the padding, and stacked);
- ``images_json`` / ``model_info``: the JSON bodies, PNGs from ``imaging.png_bytes`` (the encoder behind
  ``stackgan2 sample``), so the API and the CLI give byte-identical files for the same prompt and seed.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from stackgan2.errors import StackGAN2Error, UsageError
from stackgan2.imaging import png_bytes
from stackgan2.pipeline import MAX_SEED, Text2ImagePipeline

MAX_PROMPT_CHARS = 300
MAX_IMAGES = 16            # images per request
MAX_BODY_BYTES = 64 * 1024
DEFAULT_MAX_BATCH = 16     # images per pass of the worker, summed over the stacked requests
DEFAULT_GATHER_MS = 5.0    # an idle worker waits this long for companions before computing a lone request
ALL_STAGES = "all"
REQUEST_FIELDS = ("prompt", "n", "seed", "stage")

class RequestError(UsageError):
    """A request the server refuses: one message naming the problem, and the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageRequest:
    """A checked ``POST /v1/images`` body: ``n`` images of ``prompt``, image k from seed ``seed + k``."""

    prompt: str
    n: int
    seed: int
    branches: tuple[int, ...]   # indices into the model's resolutions, in order


@dataclass(frozen=True)
class GeneratedImages:
    """What one request gets back: ``images[k][j]`` is image k at resolution ``resolutions[j]``."""

    request: ImageRequest
    resolutions: list[int]
    images: list[list[Image.Image]]
    unknown: list[str]
    truncated: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_as_int(value: Any) -> Any:
    """A whole-number float as its int (JSON, and OpenAPI 3.1's JSON Schema, count ``9.0`` as the integer 9);
    anything else (``9.5``, NaN, booleans, strings) unchanged, for the caller to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def parse_json_body(body: bytes, content_type: str | None) -> Any:
    """The decoded JSON of a request body; 415 for another content type, 413 over ``MAX_BODY_BYTES``, 400 if malformed."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(f"Content-Type must be application/json, got {content_type or 'none'!r}", 415)
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"request body is {len(body):,} bytes; at most {MAX_BODY_BYTES:,} are accepted", 413)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", 400) from None


def stage_choices(resolutions: Sequence[int]) -> list[str]:
    return [str(r) for r in resolutions] + [ALL_STAGES]


def image_request_schema(resolutions: Sequence[int]) -> dict[str, Any]:
    """The ``POST /v1/images`` body, as JSON Schema, for a model with these branch resolutions (for the OpenAPI
    page; ``parse_image_request`` is what enforces it). ``stage`` is "all" or a resolution, as a string or an
    integer; ``n`` and ``seed`` may be written ``9.0``, which JSON Schema counts as an integer."""
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS,
                       "example": "a small red bird with black wings"},
            "n": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGES, "default": 1,
                  "description": "images; image k uses seed + k"},
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED, "default": None,
                     "description": "noise seed; null draws one (returned as 'seed')"},
            "stage": {"enum": [*stage_choices(resolutions), *resolutions], "default": str(resolutions[-1]),
                      "example": ALL_STAGES,
                      "description": "'all' or one branch resolution of the model (a string or an integer); "
                                     "default: the final branch"},
        },
    }


def parse_image_request(payload: Any, resolutions: Sequence[int]) -> ImageRequest:
    """Check a decoded ``POST /v1/images`` body against the limits; ``RequestError`` (422) names the first problem."""
    if not isinstance(payload, dict):
        raise RequestError(f"request body must be a JSON object such as {{\"prompt\": \"a small red bird\"}}, got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; the fields are {', '.join(REQUEST_FIELDS)}")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError("prompt is required and must be a string such as \"a small red bird\"")
    if not prompt.strip():
        raise RequestError("prompt is empty; describe the image in words, e.g. \"a small red bird\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f"prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS} are accepted")
    # the messages quote the value as sent: "got 17.0", not "got 17"
    n = _whole_as_int(sent_n := payload.get("n", 1))
    if not _is_int(n) or not 1 <= n <= MAX_IMAGES:
        raise RequestError(f"n must be an integer between 1 and {MAX_IMAGES}, got {json.dumps(sent_n)}")
    seed = _whole_as_int(sent_seed := payload.get("seed"))
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise RequestError(f"seed must be null or an integer between 0 and {MAX_SEED}, got {json.dumps(sent_seed)}")
    stage = _whole_as_int(sent_stage := payload.get("stage", str(resolutions[-1])))
    choices = stage_choices(resolutions)
    if _is_int(stage):
        stage = str(stage)
    if stage not in choices:
        raise RequestError(f"stage must be one of {', '.join(choices)}, got {json.dumps(sent_stage)}")
    branches = tuple(range(len(resolutions))) if stage == ALL_STAGES else (choices.index(stage),)
    # a drawn seed, as Text2ImagePipeline draws one; it is returned so the images can be made again
    return ImageRequest(prompt, n, seed if seed is not None else secrets.randbelow(2**31), branches)


@dataclass
class _Job:
    request: ImageRequest
    future: Future[GeneratedImages] = field(default_factory=Future)


_STOP = object()


class BatchingGenerator:
    """One worker thread runs the model; requests that arrive together share one pass (one generator
    forward on an accelerator; on the CPU each image has a forward to itself, as fast there, so that
    its bytes cannot depend on its companions).

    ``submit`` queues a request and returns a ``concurrent.futures.Future``. The worker takes the
    oldest request, gathers those already waiting (or arriving within ``gather_ms``) while the total
    stays within ``max_batch`` images, encodes each prompt on its own, renders all their rows at once
    and hands every request its own images. ``batch_sizes`` keeps the recent passes' image counts.
    An AttnGAN model with the official attention mask (``model.attention_official_mask``, the imported
    released models) gives a pixel of one row another row's mask, so there each request has its
    forward to itself: its images must not depend on the requests beside it.
    """

    def __init__(self, pipe: Text2ImagePipeline, max_batch: int = DEFAULT_MAX_BATCH, gather_ms: float = DEFAULT_GATHER_MS) -> None:
        if not _is_int(max_batch) or max_batch < 1:
            raise UsageError(f"max_batch must be a positive integer, got {max_batch}")
        if not gather_ms >= 0:
            raise UsageError(f"gather_ms must be >= 0, got {gather_ms}")
        self.pipe = pipe
        self.max_batch = max_batch
        self.gather_s = gather_ms / 1000
        self.alone = pipe.rows_interact
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="stackgan2-generator", daemon=True)
        self._worker.start()

    def submit(self, request: ImageRequest) -> Future[GeneratedImages]:
        if not self._worker.is_alive():
            raise RuntimeError("the generator worker has stopped")
        job = _Job(request)
        self._queue.put(job)
        return job.future

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued requests, then stop the worker."""
        self._queue.put(_STOP)
        self._worker.join(timeout)

    def _run(self) -> None:
        carry: Any = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, rows = [first], first.request.n
            deadline = time.monotonic() + self.gather_s
            while rows < self.max_batch and not self.alone:
                try:
                    wait = deadline - time.monotonic()
                    job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP or rows + job.request.n > self.max_batch:
                    carry = job  # next batch (or stop once this one is done)
                    break
                batch.append(job)
                rows += job.request.n
            self._process(batch)

    def _process(self, batch: list[_Job]) -> None:
        jobs, encoded = [], []
        for job in batch:
            if not job.future.set_running_or_notify_cancel():  # the client went away
                continue
            try:  # alone, so its embedding does not depend on the prompts it is batched with
                encoded.append(self.pipe.text_encoder.encode([job.request.prompt], device=self.pipe.device))
                jobs.append(job)
            except StackGAN2Error as exc:  # a prompt without a known word, control characters
                job.future.set_exception(RequestError(str(exc)))
        if not jobs:
            return
        try:
            embeddings = torch.cat([e.embeddings.expand(job.request.n, -1) for e, job in zip(encoded, jobs, strict=True)])
            seeds = [s for job in jobs for s in range(job.request.seed, job.request.seed + job.request.n)]
            words = None
            if self.pipe.attends_to_words:  # AttnGAN: every request's words padded to text.max_words, then stacked
                each = [self.pipe.word_inputs(e, torch.zeros(job.request.n, dtype=torch.long, device=e.words.device))
                        for e, job in zip(encoded, jobs, strict=True)]
                words = {key: torch.cat([w[key] for w in each]) for key in ("words", "mask")}
            branches = self.pipe.render(embeddings, seeds, batch_size=self.max_batch, words=words)
        except BaseException as exc:  # a bug or out of memory: every waiting request learns it, the worker lives on
            for job in jobs:
                job.future.set_exception(exc)
            return
        self.batch_sizes.append(len(seeds))
        resolutions = self.pipe.config.model.resolutions
        start = 0
        for e, job in zip(encoded, jobs, strict=True):
            request = job.request
            rows = range(start, start + request.n)
            start += request.n
            images = [[branches[b][row] for b in request.branches] for row in rows]
            job.future.set_result(
                GeneratedImages(request, [resolutions[b] for b in request.branches], images, e.unknown[0], e.truncated[0])
            )


def images_json(result: GeneratedImages) -> dict[str, Any]:
    """The JSON answer: the seed used, unknown words, and per image its seed and a base64 PNG per branch."""
    request = result.request
    return {
        "prompt": request.prompt,
        "seed": request.seed,
        "n": request.n,
        "unknown_words": result.unknown,
        "truncated": result.truncated,
        "resolutions": result.resolutions,
        "images": [
            {
                "index": k,
                "seed": request.seed + k,
                "png": {str(res): base64.b64encode(png_bytes(image)).decode("ascii")
                        for res, image in zip(result.resolutions, branches, strict=True)},
            }
            for k, branches in enumerate(result.images)
        ],
    }


def model_info(pipe: Text2ImagePipeline, name: str, shipped: bool, max_batch: int) -> dict[str, Any]:
    """``GET /v1/model``: what is being served; ``name`` is the model directory's name, never a path."""
    cfg = pipe.config
    return {
        "name": name,
        "shipped": shipped,
        "architecture": getattr(cfg.model, "arch", "stackgan2"),
        "preset": cfg.preset,
        "stages": cfg.model.stage_num,
        "resolutions": cfg.model.resolutions,
        "model": cfg.model.model_dump(mode="json"),
        "training_steps": pipe.step,
        "generator_parameters": sum(p.numel() for p in pipe.generator.parameters()),
        "vocabulary_size": len(pipe.text_encoder.vocab),
        "max_words": cfg.text.max_words,
        "device": str(pipe.device),
        "limits": {
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "max_images": MAX_IMAGES,
            "max_batch": max_batch,
            "max_body_bytes": MAX_BODY_BYTES,
            "stages": stage_choices(cfg.model.resolutions),
        },
    }
