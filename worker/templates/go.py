"""Ollama TEMPLATE layers (Go text/template) behind the same render() as the Jinja templates."""

from __future__ import annotations

import json
from typing import Any

from herd.protocol.templates.builtin import is_go_template
from herd.protocol.templates.ollama import OllamaTemplate, TemplateError as GoTemplateError
from herd.protocol.wire import ChatTurn
from herd.worker.templates.jinja import ChatTemplate, TemplateError


def _message(turn: ChatTurn) -> dict[str, Any]:
    return {"role": turn.role, "content": turn.content,
            "tool_calls": json.loads(turn.tool_calls) if turn.tool_calls else [],
            "tool_name": turn.tool_name, "tool_call_id": turn.tool_call_id,
            "thinking": turn.thinking}


class GoChatTemplate:
    def __init__(self, source: str) -> None:
        try:
            self._template = OllamaTemplate(source)
        except GoTemplateError as e:
            raise TemplateError(str(e)) from e
        except (RecursionError, ValueError, TypeError, OverflowError) as e:
            # The source is the request's or the model's: whatever it breaks is not the server
            raise TemplateError(f"template error: {type(e).__name__}: {e}") from e
        self.source = source

    @property
    def renders_bos(self) -> bool:
        return self._template.renders_bos

    def render_insert(self, prompt: str, suffix: str) -> str:
        """Fill-in-the-middle: the template gets .Prompt and .Suffix, as Ollama gives them."""
        try:
            return self._template.render_insert(prompt, suffix)
        except GoTemplateError as e:
            raise TemplateError(str(e)) from e
        except Exception as e:  # a template bug is the model's, not the server's
            raise TemplateError(f"template error: {e}") from e

    def render(self, turns: list[ChatTurn], *, tools: str = "", think: str = "") -> str:
        value: bool | str | None = None if not think else think not in ("false",)
        if think not in ("", "true", "false"):
            value = think  # a level: .Think is true and .ThinkLevel names it
        try:
            return self._template.render([_message(t) for t in turns],
                                         tools=json.loads(tools) if tools else None, think=value)
        except GoTemplateError as e:
            raise TemplateError(str(e)) from e
        except Exception as e:  # a template bug is the model's, not the server's
            raise TemplateError(f"template error: {e}") from e


def template_from_source(source: str, *, bos_token: str,
                         eos_token: str) -> ChatTemplate | GoChatTemplate:
    """A request's or a model's TEMPLATE: Ollama's Go syntax or a Jinja chat template."""
    if is_go_template(source):
        return GoChatTemplate(source)
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)
