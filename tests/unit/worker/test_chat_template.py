"""worker/chat_template.py and protocol/chat_templates.py: GGUF or built-in Jinja chat templates rendered in a sandbox."""

from __future__ import annotations

import pytest

from herd.protocol.wire import ChatTurn
from herd.protocol.templates.builtin import (BUILTIN_TEMPLATES, CHATML_TEMPLATE, GEMMA_TEMPLATE,
                                     LLAMA3_TEMPLATE)
from herd.worker.templates.jinja import ChatTemplate, TemplateError

BOS, EOS = "<bos>", "<eos>"


def template(source: str) -> ChatTemplate:
    return ChatTemplate(source, bos_token=BOS, eos_token=EOS)


def gemma() -> ChatTemplate:
    return ChatTemplate.for_model(None, "gemma3", bos_token=BOS, eos_token=EOS)


def test_gemma_folds_the_system_prompt_into_the_first_user_turn() -> None:
    prompt = gemma().render([
        ChatTurn("system", "Be brief."),
        ChatTurn("user", "Hi"),
        ChatTurn("assistant", "Hello!"),
        ChatTurn("user", "Why?"),
    ])
    assert prompt == (
        "<bos>"
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhy?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "system" not in prompt


def test_gemma_without_system_prompt() -> None:
    prompt = gemma().render([ChatTurn("user", "  Hi  ")])
    assert prompt == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_calls_the_assistant_model() -> None:
    prompt = gemma().render([ChatTurn("user", "a"), ChatTurn("assistant", "b")],
                            add_generation_prompt=False)
    assert "<start_of_turn>model\nb<end_of_turn>\n" in prompt
    assert "assistant" not in prompt


def test_generation_prompt_is_only_added_when_asked() -> None:
    turns = [ChatTurn("user", "Hi")]
    assert gemma().render(turns, add_generation_prompt=True).endswith("<start_of_turn>model\n")
    assert gemma().render(turns, add_generation_prompt=False).endswith("<end_of_turn>\n")


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3", "gemma3n"])
def test_gemma_families_use_the_gemma_template(family: str) -> None:
    chosen = ChatTemplate.for_model(None, family, bos_token=BOS, eos_token=EOS)
    assert chosen.source == GEMMA_TEMPLATE


@pytest.mark.parametrize(("family", "source"), [("llama", LLAMA3_TEMPLATE), ("qwen2", CHATML_TEMPLATE),
                                                ("qwen3", CHATML_TEMPLATE)])
def test_known_families_use_their_builtin(family: str, source: str) -> None:
    assert ChatTemplate.for_model(None, family, bos_token=BOS, eos_token=EOS).source == source
    assert BUILTIN_TEMPLATES[family] == source


@pytest.mark.parametrize("gguf_template", [None, ""])
def test_unknown_family_without_gguf_template_falls_back_to_chatml(gguf_template: str | None) -> None:
    chosen = ChatTemplate.for_model(gguf_template, "mystery", bos_token=BOS, eos_token=EOS)
    assert chosen.source == CHATML_TEMPLATE
    assert chosen.render([ChatTurn("user", "Hi")]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_gguf_template_wins_over_the_builtin() -> None:
    source = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    chosen = ChatTemplate.for_model(source, "gemma3", bos_token=BOS, eos_token=EOS)
    assert chosen.source == source
    assert chosen.render([ChatTurn("user", "Hi")]) == "[user]Hi"


def test_templates_see_bos_and_eos_tokens() -> None:
    assert template("{{ bos_token }}|{{ eos_token }}").render([]) == "<bos>|<eos>"


def test_raise_exception_in_a_template_raises_template_error() -> None:
    with pytest.raises(TemplateError, match="^x$"):
        template("{{ raise_exception('x') }}").render([ChatTurn("user", "Hi")])


def test_raise_exception_guards_used_by_real_templates() -> None:
    source = ("{% if messages[0]['role'] != 'user' %}"
              "{{ raise_exception('Conversations must start with user') }}{% endif %}ok")
    assert template(source).render([ChatTurn("user", "Hi")]) == "ok"
    with pytest.raises(TemplateError, match="must start with user"):
        template(source).render([ChatTurn("assistant", "Hi")])


@pytest.mark.parametrize("source", ["{% if %}", "{{ messages[0 }}", "{% for m in messages %}"])
def test_a_template_syntax_error_raises_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match="template error"):
        template(source)


def test_a_runtime_error_in_the_template_raises_template_error() -> None:
    with pytest.raises(TemplateError, match="template error"):
        template("{{ undefined_thing.attr }}").render([])


def test_the_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(TemplateError):
        template("{{ ''.__class__.__mro__[1].__subclasses__() }}").render([])


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


def test_tojson_keeps_non_ascii_text() -> None:
    rendered = template("{{ messages | tojson }}").render([ChatTurn("user", "café")])
    assert rendered == '[{"role": "user", "content": "café"}]'


def test_strftime_now_is_available() -> None:
    assert template("{{ strftime_now('%Y') }}").render([]).isdigit()


@pytest.mark.parametrize(
    ("source", "expected"),
    [(GEMMA_TEMPLATE, True), (LLAMA3_TEMPLATE, True), (CHATML_TEMPLATE, False),
     ("{{ bos_token }}{{ messages[0].content }}", True), ("{{ messages[0].content }}", False)],
)
def test_renders_bos_reflects_whether_the_source_uses_bos_token(source: str, expected: bool) -> None:
    assert template(source).renders_bos is expected


def test_nested_ranges_share_one_budget() -> None:
    from herd.worker.templates.jinja import ChatTemplate, TemplateError

    nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    template = ChatTemplate(nested, bos_token="", eos_token="")
    import pytest

    with pytest.raises(TemplateError, match="too many loop iterations"):
        template.render([])
    small = ChatTemplate("{% for i in range(3) %}{{ i }}{% endfor %}", bos_token="", eos_token="")
    assert small.render([]) == "012" and small.render([]) == "012"
