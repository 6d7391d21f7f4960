"""The Go text/template port and Ollama's template values. Expected outputs are what Go's
text/template prints for the same template and data."""

from __future__ import annotations


import pytest

from herd.protocol.templates.go import GoTemplate, TemplateError
from herd.protocol.templates.ollama import OllamaTemplate
from support import FIXTURES


def render(source: str, data: object = None, **kw: object) -> str:
    return GoTemplate(source).render(data if data is not None else {}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("source, data, expected", [
    ("a{{ .X }}b", {"X": "1"}, "a1b"),
    ("a {{- .X -}} b", {"X": "1"}, "a1b"),
    ("a\n  {{- .X }}\n b", {"X": "1"}, "a1\n b"),
    ("{{ .Missing }}", {}, "<no value>"),
    ("{{ .A.B }}", {"A": {"B": 3}}, "3"),
    ("{{ .ToolCalls }}", {"tool_calls": [1, 2]}, "[1 2]"),  # Go field name → JSON tag
    ("{{ if .X }}yes{{ else }}no{{ end }}", {"X": ""}, "no"),
    ("{{ if .X }}yes{{ else if .Y }}y{{ else }}no{{ end }}", {"X": 0, "Y": [1]}, "y"),
    ("{{ if and .X .Y }}both{{ end }}{{ if or .X .Y }}one{{ end }}", {"X": 1, "Y": 0}, "one"),
    ("{{ if not .X }}n{{ end }}", {"X": False}, "n"),
    ("{{ with .X }}[{{ . }}]{{ else }}none{{ end }}", {"X": "v"}, "[v]"),
    ("{{ range .L }}<{{ . }}>{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
    ("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}, "a1b2"),
    ("{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]}, "1"),
    ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", {"L": [1, 2, 3]},
     "13"),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
    ("{{ range $i, $_ := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}{{ if $last }}L{{ end }}"
     "{{ end }}", {"L": [1, 2, 3]}, "L"),
    ("{{ index .L 1 }}{{ index .M \"k\" }}", {"L": [5, 6], "M": {"k": "v"}}, "6v"),
    ("{{ len .S }}{{ slice .S 1 3 }}", {"S": "hello"}, "5el"),
    ("{{ .X | printf \"%s-%d\" \"a\" }}", {"X": 7}, "a-7"),
    ("{{ json .X }}", {"X": {"a": "<b>", "n": [1, None]}}, '{"a":"\\u003cb\\u003e","n":[1,null]}'),
    ("{{ eq .R \"user\" \"tool\" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ ge 1 2 }}", {"R": "tool"},
     "true true true false"),
    ("{{/* a comment */}}x{{- /* trimmed */ -}} y", {}, "xy"),
    ("{{ `raw\\n` }}{{ \"esc\\n\" }}", {}, "raw\\nesc\n"),
    ("{{ (index .L 0).Name }}", {"L": [{"Name": "n"}]}, "n"),
    ("{{ $.X }}{{ with .Y }}{{ $.X }}{{ . }}{{ end }}", {"X": "r", "Y": "y"}, "rry"),
])
def test_go_semantics(source: str, data: dict, expected: str) -> None:
    assert render(source, data) == expected


@pytest.mark.parametrize("source, message", [
    ("{{ if .X }}", "missing {{end}}"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ .X ", "unclosed action"),
    ("{{ nosuch .X }}", 'function "nosuch" not defined'),
    ("{{ break }}", "outside {{range}}"),
    ("{{ define \"x\" }}{{ end }}", "not supported"),
    ("{{ $y }}", "undefined variable"),
    ("{{ index .L 5 }}", "index out of range"),
])
def test_errors_are_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(").replace(")", r"\)")):
        GoTemplate(source).render({"X": 1, "L": [1]})


CHATML_LEGACY = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                 "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
                 "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")


def test_legacy_template_runs_per_exchange_and_stops_at_the_response() -> None:
    out = OllamaTemplate(CHATML_LEGACY).render([
        {"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}])
    assert out == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                   "<|im_start|>assistant\nyo<|im_end|>\n"
                   "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n")


def test_legacy_cut_applies_inside_branches_too() -> None:
    source = "[INST] {{ .Prompt }} [/INST]{{ if .Prompt }} {{ .Response }}</s>{{ end }} tail"
    assert OllamaTemplate(source).render([{"role": "user", "content": "q"}]) == "[INST] q [/INST] "


LLAMA31 = (FIXTURES / "llama3.1.gotmpl").read_text()


def test_messages_template_with_tools_and_tool_results() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "d",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "22C", "tool_name": "get_weather"},
    ]
    out = OllamaTemplate(LLAMA31).render(messages, tools=tools)
    assert out == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.\n\n"
        "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n22C<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # the last user turn lists the tools as JSON when it is the last message
    last_user = OllamaTemplate(LLAMA31).render(messages[:2], tools=tools)
    assert '{"type":"function","function":{"name":"get_weather"' in last_user
    assert last_user.endswith("Question: Weather in Paris?<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_consecutive_messages_of_one_role_are_merged() -> None:
    out = OllamaTemplate("{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}").render(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
         {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}])
    assert out == "[user:a\n\nb][tool:1][tool:2]"


@pytest.mark.parametrize("source, message", [
    ("{{ range 100000000 }}x{{ end }}", "too many range iterations"),
    # 8M steps: the step cap or the time budget stops it, whichever a busy machine meets first
    ("{{ range .L }}{{ range $.L }}{{ range $.L }}{{ . }}{{ end }}{{ end }}{{ end }}",
     "too many range iterations|took too long"),
    ("{{ range .L }}{{ $.Big }}{{ end }}", "output exceeds the limit"),
])
def test_runaway_templates_fail_instead_of_holding_the_runner(source: str, message: str) -> None:
    data = {"L": list(range(200)), "Big": "x" * (1 << 20)}
    with pytest.raises(TemplateError, match=message):
        GoTemplate(source).render(data)
