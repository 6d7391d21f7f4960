"""The checks and conversions every generation shares, whatever API dialect asked for it:
the model, its capabilities, think, keep-alive, format and sampling options."""

from __future__ import annotations

from typing import Any

import msgspec

from herd.gateway.errors import BadRequest, ModelNotFound
from herd.gateway.state import GatewayState
from herd.gateway.store.models import ModelEntry, model_name_or_400
from herd.protocol.api import Options
from herd.protocol.config import Settings
from herd.protocol.durations import DurationError, keep_alive_ns
from herd.protocol.wire import SamplingParams

_INT_SAMPLING = {"top_k", "repeat_last_n", "seed", "num_predict", "num_keep", "draft_num_predict"}


def resolve_model(state: GatewayState, model: str, missing: str = "model is required") -> ModelEntry:
    """The model a request names; `missing` is the dialect's message when it names none
    (Ollama's /api/generate answers a 404 for it, every other route a 400)."""
    if not model:
        raise ModelNotFound("") if missing == "" else BadRequest(missing)
    return state.store.resolve(model_name_or_400(model), shown=model)


def require_completion(entry: ModelEntry, shown: str, endpoint: str) -> None:
    if "completion" not in entry.capabilities:
        raise BadRequest(f'"{shown}" does not support {endpoint}')


def format_text(value: str | dict[str, Any] | None) -> str:
    """Ollama's `format`: "" / null = free text, "json", or a JSON schema object."""
    if value is None or value == "":
        return ""
    if value == "json":
        return "json"
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    raise BadRequest(f'invalid format: "{value}"; expected "json" or a valid JSON Schema object')


def sampling_params(options: Options, format: str = "") -> SamplingParams:
    values: dict[str, Any] = {"format": format}
    for name in SamplingParams.__struct_fields__:
        value = getattr(options, name, None)
        if value is not None:
            values[name] = int(value) if name in _INT_SAMPLING else value
    return SamplingParams(**values)


def unload_requested(keep_alive: float | str | None, settings: Settings) -> bool:
    """An explicit keep_alive of 0 with nothing to generate: Ollama expires the runner before
    any capability check (server/routes.go, "expire the runner"), so an embedding model can
    be stopped through /api/generate and /api/chat too."""
    return keep_alive is not None and request_keep_alive(keep_alive, settings) == 0


def request_keep_alive(value: float | str | None, settings: Settings) -> int:
    try:
        return keep_alive_ns(value, settings.keep_alive_ns)
    except DurationError as e:
        raise BadRequest(str(e)) from e


def think_setting(think: bool | str | None, model_name: str, entry: ModelEntry) -> str:
    """The request's `think` for the runner: "true"/"false", a level, or "" for a model that
    cannot think and was not asked to. Absent on a thinking model means think: Ollama's
    handlers set `req.Think = true` for it before templating (server/routes.go)."""
    if isinstance(think, str) and think not in ("high", "medium", "low", "max"):
        raise BadRequest(f'invalid think value: "{think}" (must be "high", "medium", "low", '
                         '"max", true, or false)')
    if think and "thinking" not in entry.capabilities:
        raise BadRequest(f'"{model_name}" does not support thinking')
    if think is None:
        return "true" if "thinking" in entry.capabilities else ""
    if isinstance(think, bool):
        return "true" if think else "false"
    return think


_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "max": "max", "xhigh": "max", "ultra": "max"}


def effort_think(effort: Any) -> bool | str | None:
    """OpenAI's reasoning effort (chat completions and responses) as Ollama's `think`."""
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        raise BadRequest(f"invalid reasoning value: {effort!r}")
    return _EFFORTS[effort]


def check_top_logprobs(top_logprobs: int) -> None:
    if not 0 <= top_logprobs <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")


# Every option's range. Load-time options size allocations in the runner (num_batch -1 reached
# llama_batch_init(-1) and hung the request); sampling ones cross the wire as 64-bit integers.
# 0 keeps the default where the option has one. num_predict: any negative but -2 is unlimited
# (capped by the runner), -2 fills the context.
_INT32 = (-(1 << 31), (1 << 31) - 1)
OPTION_RANGES: dict[str, tuple[int, int]] = {
    "num_ctx": (0, 1 << 24),
    "num_batch": (0, 16384),
    "num_thread": (0, 1024),
    "num_gpu": (-1, 1 << 16),
    "main_gpu": (0, 1 << 10),
    "num_predict": _INT32,
    "num_keep": (-1, 1 << 24),
    "top_k": (-1, 1 << 24),
    "repeat_last_n": (-1, 1 << 24),
    "seed": (-(1 << 63), (1 << 63) - 1),
}
MAX_STOP_SEQUENCES = 256
MAX_IMAGES = 32
MAX_IMAGE_CHARS = 32 << 20  # base64 text of one image


def check_options(options: Options) -> None:
    """A 400 naming the first option out of its range (or not a finite number)."""
    for name in Options.__struct_fields__:
        value = getattr(options, name)
        if value is None or isinstance(value, (bool, str, list)):
            continue
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRequest(f"invalid option {name}: must be a finite number")
        bounds = OPTION_RANGES.get(name)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise BadRequest(f"invalid option {name}: {value} is not between {bounds[0]} "
                             f"and {bounds[1]}")
    if options.stop is not None and len(options.stop) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"invalid option stop: more than {MAX_STOP_SEQUENCES} stop sequences")


def check_image_limits(images: list[str]) -> None:
    """How many images and how large, before their base64 is read at all."""
    if len(images) > MAX_IMAGES:
        raise BadRequest(f"too many images: {len(images)} (at most {MAX_IMAGES})")
    for image in images:
        if len(image) > MAX_IMAGE_CHARS:
            raise BadRequest(f"image too large: at most {MAX_IMAGE_CHARS} bytes of base64")
