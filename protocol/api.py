"""The public Ollama JSON API as msgspec Structs: requests are decoded straight into these."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

# JSON numbers are truncated to int for integer options, as Ollama does, so 4096.0 is fine.
Int = int | float | None


# The Ollama release whose API Herd follows (ollama/ollama's newest stable tag, v0.32.15), as
# /api/version reports it: clients such as ollama-python and Open WebUI gate features on it.
API_VERSION = "0.32.15"


class Options(Struct, omit_defaults=True):
    """Every option is optional: unset means "inherit" (defaults ← model params ← request).

    Unknown keys (legacy mirostat, tfs_z, numa, ...) are ignored by the decoder, like Ollama.
    """

    num_keep: Int = None
    seed: Int = None
    num_predict: Int = None
    top_k: Int = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_last_n: Int = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    # Ollama's runner option (api/types.go, Runner.DraftNumPredict); per request in Herd,
    # where it bounds prompt-lookup drafts: 0 turns speculative decoding off.
    draft_num_predict: Int = None
    # Load-time options: changing them means another runner.
    num_ctx: Int = None
    num_batch: Int = None
    num_gpu: Int = None
    main_gpu: Int = None
    use_mmap: bool | None = None
    num_thread: Int = None


OPTION_TYPE_NAMES: dict[str, str] = {
    name: ("array of strings" if name == "stop" else "boolean" if name == "use_mmap" else
           "float" if name in {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty",
                               "presence_penalty", "frequency_penalty"} else "integer")
    for name in Options.__struct_fields__
}


def merge_options(*layers: Options | None) -> Options:
    """Later layers win key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in layer.__struct_fields__:
            value = getattr(layer, name)
            if value is not None:
                merged[name] = value
    return Options(**merged)


class ToolFunctionCall(Struct, omit_defaults=True):
    name: str
    arguments: dict[str, Any] = {}
    index: int | None = None


class ToolCall(Struct, omit_defaults=True):
    function: ToolFunctionCall
    id: str | None = None


class Message(Struct, omit_defaults=True):
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class Tool(Struct, omit_defaults=True):
    function: dict[str, Any]
    type: str = "function"


KeepAlive = float | str | None
Think = bool | str | None
Format = str | dict[str, Any] | None


class GenerateRequest(Struct, omit_defaults=True):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    images: list[str] | None = None
    think: Think = None
    format: Format = None
    options: Options | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool = False
    keep_alive: KeepAlive = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = msgspec.field(default=False, name="_debug_render_only")


class ChatRequest(Struct, omit_defaults=True):
    model: str = ""
    messages: list[Message] = []
    tools: list[Tool] | None = None
    think: Think = None
    format: Format = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = msgspec.field(default=False, name="_debug_render_only")


class Metrics(Struct, omit_defaults=True):
    """Durations in nanoseconds; zero values are omitted like Ollama's omitempty."""

    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0


class TopLogprob(Struct, omit_defaults=True):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(Struct, omit_defaults=True):
    """One generated token's log-probability (Ollama's shape; also OpenAI's `content` items)."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] | None = None


class DebugInfo(Struct, omit_defaults=True):
    rendered_template: str
    image_count: int = 0


class DebugChunk(Struct):
    """`_debug_render_only`: the prompt the template produced; nothing is generated."""

    model: str
    created_at: str
    done: bool
    debug_info: DebugInfo = msgspec.field(name="_debug_info")


class GenerateChunk(Struct, omit_defaults=True):
    model: str
    created_at: str
    response: str
    done: bool
    thinking: str = ""
    done_reason: str | None = None
    context: list[int] | None = None
    logprobs: list[Logprob] | None = None
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0


class AssistantMessage(Struct, omit_defaults=True):
    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChunk(Struct, omit_defaults=True):
    model: str
    created_at: str
    message: AssistantMessage
    done: bool
    done_reason: str | None = None
    logprobs: list[Logprob] | None = None
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0


class ErrorBody(Struct):
    error: str


class VersionResponse(Struct):
    version: str


class ModelDetails(Struct):
    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    # Only /api/tags fills these (Go's omitempty: absent when unknown).
    context_length: int | msgspec.UnsetType = msgspec.UNSET
    embedding_length: int | msgspec.UnsetType = msgspec.UNSET


class ListedModel(Struct):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    capabilities: list[str] | msgspec.UnsetType = msgspec.UNSET


class Tensor(Struct):
    """One tensor as /api/show lists it: the ggml type's name and the GGUF dimensions."""

    name: str
    type: str
    shape: list[int]


class TagsResponse(Struct):
    models: list[ListedModel]


class RunnerStatus(Struct):
    """One replica of a running model (Herd's addition to /api/ps)."""

    node: str
    devices: list[str]
    size_vram: int
    slots: int
    busy: int
    queued: int  # requests handed to it that it has not admitted yet


class RunningModel(Struct):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int
    runners: list[RunnerStatus] = []
    queued: int = 0  # requests waiting for a slot on any of its replicas


class PsResponse(Struct):
    models: list[RunningModel]


class CreateRequest(Struct, omit_defaults=True):
    model: str = ""
    name: str = ""  # deprecated alias of model
    from_: str = msgspec.field(default="", name="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    quantize: str = ""
    quantization: str = ""  # deprecated alias of quantize
    stream: bool = True
    modelfile: str = ""  # the pre-0.5.5 form: a Modelfile's text
    # A draft model for speculative decoding (Ollama's newest create): its GGUF, or a
    # safetensors folder to convert, and optionally a quantization for it.
    draft_files: dict[str, str] | None = None
    draft_quantize: str = ""


class StatusChunk(Struct, omit_defaults=True):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class TransferRequest(Struct, omit_defaults=True):
    """POST /api/pull and /api/push. `username`/`password` are accepted and ignored, as Ollama."""

    model: str = ""
    name: str = ""  # deprecated alias of model
    insecure: bool = False  # allow a plain-http registry
    stream: bool = True


class EmbedRequest(Struct, omit_defaults=True):
    model: str = ""
    input: Any = None  # str | list[str]; checked by hand for Ollama's "invalid input type"
    truncate: bool = True
    dimensions: int = 0
    options: Options | None = None
    keep_alive: KeepAlive = None


class EmbedResponse(Struct, omit_defaults=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0


class LegacyEmbeddingsRequest(Struct, omit_defaults=True):
    model: str = ""
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive = None


class LegacyEmbeddingsResponse(Struct):
    embedding: list[float]


class CopyRequest(Struct):
    source: str = ""
    destination: str = ""


class DeleteRequest(Struct):
    model: str = ""
    name: str = ""  # deprecated alias of model


class ShowRequest(Struct):
    model: str = ""
    name: str = ""  # deprecated alias of model
    verbose: bool = False
    system: str | None = None
    options: Options | None = None


class ShowResponse(Struct, omit_defaults=True):
    modelfile: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    license: str | None = None
    messages: list[Message] | None = None
    projector_info: dict[str, Any] | None = None
    tensors: list[Tensor] | None = None
