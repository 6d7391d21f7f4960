"""The OpenAI-compatible surface (/v1) as msgspec Structs, as Ollama serves it."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from herd.protocol.api import Logprob, Options, Tool


class StreamOptions(Struct):
    include_usage: bool = False


class FunctionCallIn(Struct):
    name: str = ""
    arguments: Any = ""  # a JSON object's text; parsed by the route for Ollama's own error


class ToolCallIn(Struct):
    function: FunctionCallIn
    id: str = ""
    type: str = "function"


class ChatMessageIn(Struct, omit_defaults=True):
    role: str
    content: Any = None  # str, a list of content parts, or null with tool_calls
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    reasoning: str | None = None


class ChatCompletionRequest(Struct, omit_defaults=True):
    model: str = ""
    messages: list[ChatMessageIn] = []
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None  # "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
    logprobs: bool = False
    top_logprobs: int = 0
    reasoning_effort: str | None = None
    reasoning: dict[str, Any] | None = None  # {"effort": ...}
    options: Options | None = None  # Herd extension: any Ollama option, num_ctx included
    keep_alive: float | str | None = None


class CompletionRequest(Struct, omit_defaults=True):
    model: str = ""
    prompt: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: Any = None  # str | list[str], checked by hand for Ollama's message
    suffix: str | None = None
    logprobs: int | None = None  # N > 0: log-probabilities with the N likeliest alternatives
    options: Options | None = None
    keep_alive: float | str | None = None


class EmbeddingRequest(Struct, omit_defaults=True):
    model: str = ""
    input: Any = None
    dimensions: int = 0
    encoding_format: str = "float"
    options: Options | None = None
    keep_alive: float | str | None = None


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCallOut(Struct):
    name: str
    arguments: str  # a JSON object's text: OpenAI's clients json.loads it


class ToolCallOut(Struct):
    id: str
    index: int
    function: FunctionCallOut
    type: str = "function"


class AssistantOut(Struct, omit_defaults=True):
    role: str
    content: str
    tool_calls: list[ToolCallOut] | None = None
    reasoning: str = ""  # Ollama's name for the model's thinking


class Delta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    reasoning: str | None = None


class ChoiceLogprobs(Struct):
    content: list[Logprob]


class ChatChoice(Struct):
    index: int
    message: AssistantOut
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    object: str = "chat.completion"
    system_fingerprint: str = "fp_ollama"


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"
    system_fingerprint: str = "fp_ollama"


class CompletionChoice(Struct):
    text: str
    index: int
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class Completion(Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: str = "text_completion"
    system_fingerprint: str = "fp_ollama"


class EmbeddingItem(Struct):
    embedding: list[float] | str
    index: int
    object: str = "embedding"


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct):
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


class ModelCard(Struct):
    id: str
    created: int
    owned_by: str
    object: str = "model"
    # Herd's extension (OpenRouter, vLLM and LM Studio list it too): the trained context, so a
    # client can size its prompts without a second call to /api/show. Absent when unknown.
    context_length: int | msgspec.UnsetType = msgspec.UNSET


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


class ErrorDetail(Struct):
    message: str
    type: str
    param: None = None
    code: None = None


class ErrorEnvelope(Struct):
    error: ErrorDetail


def error_envelope(message: str, status: int) -> ErrorEnvelope:
    # OpenAI answers a bad key with invalid_request_error too (its SDK keys off the status).
    kind = {400: "invalid_request_error", 401: "invalid_request_error",
            404: "not_found_error"}.get(status, "api_error")
    return ErrorEnvelope(ErrorDetail(message, kind))
