"""OpenAI's Responses API (POST /v1/responses) as msgspec Structs, stateless as newest Ollama
serves it: every request carries its whole conversation in `input`."""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from herd.protocol.api import Options


class ContentPartIn(Struct, omit_defaults=True):
    """One part of an input message, flat: `input_text`/`output_text` carry `text`; images and
    files are recognised only to be refused clearly."""

    type: str
    text: str = ""
    image_url: str | None = None
    file_id: str | None = None


class InputItem(Struct, omit_defaults=True):
    """One input item, flat like the Anthropic blocks: a message (`type` "message" or absent,
    with `role` and `content`), a `function_call` the model made earlier, the
    `function_call_output` that answers it, or a `reasoning` item handed back."""

    type: str = ""
    role: str = ""
    content: str | list[ContentPartIn] | None = None
    id: str = ""
    call_id: str = ""  # function_call / function_call_output
    name: str = ""
    arguments: str = ""  # a JSON object's text
    output: str | list[ContentPartIn] | None = None
    summary: list[ContentPartIn] | None = None  # reasoning
    encrypted_content: str | None = None
    status: str | None = None


class FunctionToolIn(Struct, omit_defaults=True):
    """Responses function tools are flat (no nested `function` object like chat completions)."""

    type: str = "function"
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(Struct, omit_defaults=True):
    type: str = "text"  # "text", "json_object" or "json_schema"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(Struct, omit_defaults=True):
    format: TextFormat | None = None


class ReasoningConfig(Struct, omit_defaults=True):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(Struct, omit_defaults=True):
    model: str = ""
    input: str | list[InputItem] = []
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[FunctionToolIn] | None = None
    tool_choice: Any = None  # "none" | "auto" | "required" | {"type": "function", "name"}
    parallel_tool_calls: bool | None = None  # ignored
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    stream: bool = False
    previous_response_id: str | None = None  # ignored, as Ollama: nothing is stored
    conversation: Any = None  # ignored likewise
    store: bool | None = None  # ignored: nothing is stored either way
    metadata: Any = None  # ignored
    include: Any = None  # ignored
    truncation: str | None = None  # ignored
    user: str | None = None  # ignored
    options: Options | None = None  # Herd extension: any Ollama option, num_ctx included
    keep_alive: float | str | None = None


# -- the response ------------------------------------------------------------------------------
# Each output item type is its own Struct with exactly OpenAI's fields: the SDK's stream
# accumulator appends deltas to `text`/`arguments` and needs them present, even empty.

class OutputText(Struct, tag_field="type", tag="output_text"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class SummaryText(Struct, tag_field="type", tag="summary_text"):
    text: str


class MessageItem(Struct, tag_field="type", tag="message"):
    id: str
    status: str  # in_progress, completed, incomplete
    role: str
    content: list[OutputText]


class FunctionCallItem(Struct, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str  # a JSON object's text
    status: str


class ReasoningItem(Struct, tag_field="type", tag="reasoning"):
    """The model's thinking, as a summary: what Ollama exposes and what clients display."""

    id: str
    summary: list[SummaryText]
    status: str


OutputItem = MessageItem | FunctionCallItem | ReasoningItem


class InputTokensDetails(Struct, frozen=True):
    cached_tokens: int = 0


class OutputTokensDetails(Struct, frozen=True):
    reasoning_tokens: int = 0


class Usage(Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()


class IncompleteDetails(Struct):
    reason: str  # "max_output_tokens"


class Response(Struct):
    id: str
    created_at: int
    status: str  # in_progress, completed, incomplete
    model: str
    output: list[OutputItem]
    usage: Usage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: Any = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[FunctionToolIn] = []
    tool_choice: Any = "auto"  # as the request gave it
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    previous_response_id: None = None
    store: bool = False
    metadata: dict[str, Any] = {}
    object: str = "response"


# -- stream events: `event: <type>` then `data: <one of these>` --------------------------------
# Every event carries `sequence_number`, counted from 0 over the whole stream.

class ResponseCreated(Struct, tag_field="type", tag="response.created"):
    sequence_number: int
    response: Response


class ResponseInProgress(Struct, tag_field="type", tag="response.in_progress"):
    sequence_number: int
    response: Response


class ResponseCompleted(Struct, tag_field="type", tag="response.completed"):
    sequence_number: int
    response: Response


class OutputItemAdded(Struct, tag_field="type", tag="response.output_item.added"):
    sequence_number: int
    output_index: int
    item: OutputItem


class OutputItemDone(Struct, tag_field="type", tag="response.output_item.done"):
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartAdded(Struct, tag_field="type", tag="response.content_part.added"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class ContentPartDone(Struct, tag_field="type", tag="response.content_part.done"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDelta(Struct, tag_field="type", tag="response.output_text.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(Struct, tag_field="type", tag="response.output_text.done"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class SummaryPartAdded(Struct, tag_field="type", tag="response.reasoning_summary_part.added"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class SummaryPartDone(Struct, tag_field="type", tag="response.reasoning_summary_part.done"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class SummaryTextDelta(Struct, tag_field="type", tag="response.reasoning_summary_text.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class SummaryTextDone(Struct, tag_field="type", tag="response.reasoning_summary_text.done"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ArgumentsDelta(Struct, tag_field="type", tag="response.function_call_arguments.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDone(Struct, tag_field="type", tag="response.function_call_arguments.done"):
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(Struct, tag_field="type", tag="error"):
    """A failure after the 200 went out: the stream can only say so in an event."""

    sequence_number: int
    message: str
    code: str | None = None
    param: str | None = None
