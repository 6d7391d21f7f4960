"""worker/prompt.py: a long chat is cut to fit by dropping its oldest messages — as few as
possible, never a system message or the last one."""

from __future__ import annotations

import pathlib

import pytest

from herd.protocol.wire import ChatTurn, SamplingParams, Submit
from herd.worker.templates.jinja import ChatTemplate
from herd.worker.engine.llama import LlamaModel
from herd.worker.engine.prompt import PromptBuilder, RequestError

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def model(tiny_gguf: pathlib.Path):
    m = LlamaModel(str(tiny_gguf), n_gpu_layers=0)
    yield m
    m.close()


def _chat(n: int) -> list[ChatTurn]:
    turns = [ChatTurn("system", "keep me")]
    for i in range(n):
        turns.append(ChatTurn("user" if i % 2 == 0 else "assistant", f"message {i} " + "words " * 9))
    return turns + [ChatTurn("user", "the last one")]


def _fewest_drops(builder: PromptBuilder, req: Submit, limit: int) -> int:
    """The answer by brute force: drop one more at a time until it fits."""
    droppable = [i for i, t in enumerate(req.messages[:-1]) if t.role != "system"]
    for n in range(len(droppable) + 1):
        kept = [t for i, t in enumerate(req.messages) if i not in set(droppable[:n])]
        text, with_bos = builder.render(req, kept)
        if len(builder._tokens(req, text, with_bos)) < limit:
            return n
    return len(droppable)


@pytest.mark.parametrize("limit", [64, 100, 160, 250])
def test_the_fewest_oldest_messages_are_dropped(model: LlamaModel, limit: int) -> None:
    builder = PromptBuilder(model, ChatTemplate(TEMPLATE, bos_token="", eos_token=""), limit)
    req = Submit(1, SamplingParams(), messages=_chat(20))
    prompt = builder.build(req)
    drops = _fewest_drops(builder, req, limit)
    assert prompt.text.startswith("[system] keep me\n")
    assert prompt.text.endswith("[user] the last one\n")
    assert f"message {drops} " in prompt.text or drops == 20
    assert drops == 0 or f"message {drops - 1} " not in prompt.text
    assert len(prompt.tokens) < limit


def test_without_truncate_a_long_chat_is_refused(model: LlamaModel) -> None:
    builder = PromptBuilder(model, ChatTemplate(TEMPLATE, bos_token="", eos_token=""), 64)
    with pytest.raises(RequestError, match="exceeds the context length"):
        builder.build(Submit(1, SamplingParams(), messages=_chat(20), truncate=False))
