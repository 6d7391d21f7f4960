"""Ollama's TEMPLATE layers: Go text/templates fed the values Ollama gives them.

A template that reads `.Messages` gets the whole conversation; an older one that only knows
`.System`/`.Prompt`/`.Response` is run once per exchange and the last run is cut after
`.Response`, which is where the model takes over — the way Ollama's server does it.
"""

from __future__ import annotations

from typing import Any

from herd.protocol.templates.go import GoJSON, GoTemplate, TemplateError

__all__ = ["OllamaTemplate", "TemplateError"]


def _message(m: dict[str, Any]) -> dict[str, Any]:
    # Every field of Ollama's api.Message is present, zero-valued when unset, as in Go.
    calls = [{"id": c.get("id", ""),
              "function": {"index": (c.get("function") or {}).get("index", i),
                           "name": (c.get("function") or {}).get("name", ""),
                           "arguments": GoJSON((c.get("function") or {}).get("arguments") or {})}}
             for i, c in enumerate(m.get("tool_calls") or [])]
    return {"role": m.get("role", ""), "content": m.get("content") or "",
            "thinking": m.get("thinking") or "", "images": m.get("images") or [],
            "tool_calls": calls, "tool_name": m.get("tool_name") or "",
            "tool_call_id": m.get("tool_call_id") or ""}


def _tool(t: dict[str, Any]) -> GoJSON:
    function = GoJSON(t.get("function") or {})
    return GoJSON({**t, "function": function})


def collate(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """All system texts joined, and the messages with same-role neighbours merged (not tool
    results: each answers its own call)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        m = _message(m)
        if m["role"] == "system":
            system.append(m["content"])
        if out and out[-1]["role"] == m["role"] and m["role"] != "tool":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(m)
    return "\n\n".join(system), out


class OllamaTemplate:
    def __init__(self, source: str) -> None:
        self.template = GoTemplate(source)
        self.source = source
        self.uses_messages = self.template.uses("Messages")

    @property
    def renders_bos(self) -> bool:
        return False  # Go templates leave BOS to the tokenizer

    def render_insert(self, prompt: str, suffix: str) -> str:
        return self.template.render({"Prompt": prompt, "Suffix": suffix, "Response": ""})

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               think: bool | str | None = None) -> str:
        system, collated = collate(messages)
        # think: true is level "medium" to a template, as Ollama's ThinkValue.String() says.
        level = think if isinstance(think, str) else "medium" if think else ""
        think_values = {"Think": bool(think), "ThinkLevel": level,
                        "IsThinkSet": think is not None}
        if self.uses_messages:
            return self.template.render({
                "System": system, "Messages": collated, "Tools": [_tool(t) for t in tools or []],
                "Response": "", "Prompt": "", "Suffix": "", **think_values})
        parts: list[str] = []
        system = prompt = response = ""

        def run_exchange() -> None:
            nonlocal system, prompt, response
            parts.append(self.template.render({"System": system, "Prompt": prompt,
                                               "Response": response, **think_values}))
            system = prompt = response = ""

        for m in collated:
            if m["role"] == "system":
                if prompt or response:
                    run_exchange()
                system = m["content"]
            elif m["role"] == "user":
                if response:
                    run_exchange()
                prompt = m["content"]
            elif m["role"] == "assistant":
                response = m["content"]
        parts.append(self.template.render({"System": system, "Prompt": prompt,
                                           "Response": response, **think_values},
                                          cut_after="Response"))
        return "".join(parts)

