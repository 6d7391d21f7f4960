"""Chat templates: the GGUF's Jinja template, else a built-in one for the model family."""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2

from herd.protocol.templates.builtin import builtin_template
from herd.protocol.wire import ChatTurn
from herd.worker.templates.jinja_bounds import BoundedEnvironment, TemplateError

__all__ = ["ChatTemplate", "TemplateError"]


_RANGE_BUDGET = 1_000_000


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _message(turn: ChatTurn) -> dict[str, Any]:
    """A turn as Hugging Face chat templates (Qwen2.5, Llama 3.1, Hermes, Mistral) read it:
    keys appear only when set, since templates test `'tool_calls' in message`."""
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = json.loads(turn.tool_calls)
    if turn.tool_name:
        message["name"] = turn.tool_name
        message["tool_name"] = turn.tool_name
    if turn.tool_call_id:
        message["tool_call_id"] = turn.tool_call_id
    if turn.thinking:
        # Qwen3 and DeepSeek templates replay `reasoning_content`; others read `thinking`.
        message["reasoning_content"] = turn.thinking
        message["thinking"] = turn.thinking
    return message


class ChatTemplate:
    """Renders chat turns into the prompt text the model was trained on."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["range"] = self._range
        env.add_filter("tojson", _tojson)
        self._env = env
        self._range_left = 0
        try:
            env.check_nesting(source)
            self._template = env.from_string(source)
        except TemplateError:
            raise
        except jinja2.TemplateError as e:
            raise TemplateError(f"template error: {e}") from e
        except (RecursionError, SyntaxError, MemoryError, ValueError, OverflowError) as e:
            # Jinja's parser and Python's compiler give up on what is too deep or too big
            raise TemplateError(f"template error: {type(e).__name__}: {e}") from e
        self.source = source
        self._bos = bos_token
        self._eos = eos_token

    def _range(self, *args: int) -> range:
        # The sandbox caps one range at 100,000 items, not loops nested in each other; the
        # runner renders in its main loop, so a template's loops share one budget per render.
        r = range(*args)
        self._range_left -= len(r)
        if self._range_left < 0:
            raise TemplateError("template error: too many loop iterations")
        return r

    @classmethod
    def for_model(cls, gguf_template: str | None, family: str, *, bos_token: str,
                  eos_token: str) -> ChatTemplate:
        source = gguf_template or builtin_template(family)
        return cls(source, bos_token=bos_token, eos_token=eos_token)

    @property
    def renders_bos(self) -> bool:
        return "bos_token" in self.source

    def render(self, turns: list[ChatTurn], *, add_generation_prompt: bool = True,
               tools: str = "", think: str = "") -> str:
        self._range_left = _RANGE_BUDGET
        try:
            variables: dict[str, Any] = {"messages": [_message(t) for t in turns]}
            if tools:
                # Absent rather than None without tools: some templates test `tools is defined`.
                variables["tools"] = json.loads(tools)
            if think:
                # Qwen3's switch; gpt-oss-style templates read a level
                variables["enable_thinking"] = think != "false"
                if think not in ("true", "false"):
                    variables["reasoning_effort"] = think
            return self._env.render_bounded(self._template, dict(
                add_generation_prompt=add_generation_prompt, bos_token=self._bos,
                eos_token=self._eos, **variables))
        except TemplateError:
            raise
        except Exception as e:  # a template bug is the model's, not the server's
            raise TemplateError(f"template error: {e}") from e
