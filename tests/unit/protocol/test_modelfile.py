"""gateway/modelfile.py: Ollama's Modelfile format (parse, render for /api/show, params typing)."""

from __future__ import annotations

import pytest

from herd.protocol.modelfile import (
    Modelfile,
    ModelfileError,
    options_from_mapping,
    parse_modelfile,
)
from herd.protocol.modelfile_render import render_modelfile, render_parameters
from herd.protocol.api import Message, Options

GEMMA_TEMPLATE = '''{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>

{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
'''

REALISTIC = f'''# A Modelfile in the shape Ollama documents.
FROM gemma3:270m

# sampling
PARAMETER temperature 0.7
PARAMETER num_ctx 4096
PARAMETER stop "<end_of_turn>"
PARAMETER stop <start_of_turn>
PARAMETER use_mmap false
PARAMETER mirostat 2

TEMPLATE """{GEMMA_TEMPLATE}"""
SYSTEM "You are \\"Herd\\", a helpful assistant."
ADAPTER ./lora.gguf
LICENSE """Apache License
Version 2.0"""
LICENSE MIT
MESSAGE user Is the sky blue?
MESSAGE assistant """Yes.

It is."""
REQUIRES 0.6.0
'''


def test_parses_a_realistic_modelfile() -> None:
    parsed = parse_modelfile(REALISTIC)
    assert parsed == Modelfile(
        from_="gemma3:270m",
        parameters=Options(temperature=0.7, num_ctx=4096, stop=["<end_of_turn>", "<start_of_turn>"],
                           use_mmap=False),
        template=GEMMA_TEMPLATE,
        system='You are "Herd", a helpful assistant.',
        adapters=["./lora.gguf"],
        licenses=["Apache License\nVersion 2.0", "MIT"],
        messages=[Message(role="user", content="Is the sky blue?"),
                  Message(role="assistant", content="Yes.\n\nIt is.")],
        requires="0.6.0",
    )
    assert isinstance(parsed.parameters.num_ctx, int)
    assert isinstance(parsed.parameters.temperature, float)


def test_instructions_are_case_insensitive_and_values_trimmed() -> None:
    parsed = parse_modelfile("from  llama3.2  \n\tParameter top_k 20\nsystem   be brief  \n"
                             "Message system hi\nrequires v0.14.0\n")
    assert parsed.from_ == "llama3.2"
    assert parsed.parameters == Options(top_k=20)
    assert parsed.system == "be brief"
    assert parsed.messages == [Message(role="system", content="hi")]
    assert parsed.requires == "0.14.0"


def test_defaults_when_only_from() -> None:
    assert parse_modelfile("FROM ./model.gguf") == Modelfile(from_="./model.gguf")


def test_crlf_bom_and_comments_after_indentation() -> None:
    parsed = parse_modelfile('\ufeffFROM m\r\n   # note\r\nTEMPLATE """a\r\nb"""\r\n')
    assert parsed.template == "a\nb"


def test_heredoc_keeps_mid_line_triple_quotes_and_trailing_quote() -> None:
    # Like Ollama, a heredoc closes only at """ that ends its line.
    parsed = parse_modelfile('FROM m\nSYSTEM """say """hi""" now"""\nTEMPLATE """say "hi""""\n')
    assert parsed.system == 'say """hi""" now'
    assert parsed.template == 'say "hi"'


def test_double_quoted_value_may_span_lines_and_keeps_unknown_escapes() -> None:
    parsed = parse_modelfile('FROM "C:\\models\\x.gguf"\nSYSTEM "one\ntwo \\\\ \\" three"\n')
    assert parsed.from_ == "C:\\models\\x.gguf"
    assert parsed.system == 'one\ntwo \\ " three'


def test_empty_quoted_values() -> None:
    parsed = parse_modelfile('FROM m\nSYSTEM ""\nTEMPLATE """"""\n')
    assert parsed.system == ""
    assert parsed.template == ""


def test_stop_accumulates_and_later_scalars_win() -> None:
    parsed = parse_modelfile("FROM m\nPARAMETER stop a\nPARAMETER seed 1\nPARAMETER stop b\n"
                             "PARAMETER seed -7\n")
    assert parsed.parameters == Options(stop=["a", "b"], seed=-7)


@pytest.mark.parametrize(("line", "expected"), [
    ("PARAMETER use_mmap T", Options(use_mmap=True)),
    ("PARAMETER use_mmap 0", Options(use_mmap=False)),
    ("PARAMETER top_p .5", Options(top_p=0.5)),
    ("PARAMETER repeat_penalty 1", Options(repeat_penalty=1.0)),
    ("PARAMETER min_p 1e-3", Options(min_p=0.001)),
    ("PARAMETER num_predict +128", Options(num_predict=128)),
])
def test_parameter_value_typing(line: str, expected: Options) -> None:
    assert parse_modelfile(f"FROM m\n{line}\n").parameters == expected


@pytest.mark.parametrize("name", ["mirostat", "mirostat_tau", "mirostat_eta", "tfs_z",
                                  "penalize_newline", "numa", "low_vram", "f16_kv", "logits_all",
                                  "vocab_only", "use_mlock"])
def test_legacy_parameters_are_dropped(name: str) -> None:
    assert parse_modelfile(f"FROM m\nPARAMETER {name} 1\n").parameters == Options()


@pytest.mark.parametrize(("text", "message"), [
    ("FROM m\nPARAMETER bogus 1", "(line 2): unknown parameter 'bogus'"),
    ("FROM m\nPARAMETER Temperature 1", "(line 2): unknown parameter 'Temperature'"),
    ("FROM m\n\nPARAMETER temperature hot",
     "(line 3): invalid float value 'hot' for parameter 'temperature'"),
    ("FROM m\nPARAMETER temperature nan",
     "(line 2): invalid float value 'nan' for parameter 'temperature'"),
    ("FROM m\nPARAMETER num_ctx 4096.5",
     "(line 2): invalid int value '4096.5' for parameter 'num_ctx'"),
    ("FROM m\nPARAMETER use_mmap yes", "(line 2): invalid bool value 'yes' for parameter 'use_mmap'"),
    ("FROM m\nPARAMETER temp-x 1", "(line 2): invalid parameter name 'temp-x'"),
    ("FROM m\nPARAMETER", "(line 2): missing parameter name after PARAMETER"),
    ("FROM m\nPARAMETER seed", "(line 2): missing value for parameter 'seed'"),
    ("FROM m\nMESSAGE tool hi",
     "(line 2): invalid message role 'tool': must be one of \"system\", \"user\" or \"assistant\""),
    ("FROM m\nMESSAGE User hi", "(line 2): invalid message role 'User'"),
    ("FROM m\nMESSAGE", "(line 2): missing message role after MESSAGE"),
    ("FROM m\nSPLIT x", "(line 2): unknown instruction 'SPLIT': must be one of FROM, PARAMETER, "
                        "TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE, REQUIRES or DRAFT"),
    ("FROM m\nDRAFT a\nDRAFT b", "(line 3): only one DRAFT model is supported"),
    ("FROM m\nDRAFT", "(line 2): missing value for DRAFT"),
    ("FROM=m", "(line 1): unknown instruction 'FROM=m'"),
    ("FROM m\nSYSTEM", "(line 2): missing value for SYSTEM"),
    ('FROM ""', "(line 1): missing value for FROM"),
    ('FROM m\nTEMPLATE """abc\n\n', '(line 2): unterminated """ value for TEMPLATE'),
    ('FROM m\nSYSTEM "abc\n', '(line 2): unterminated " value for SYSTEM'),
    ("FROM m\nREQUIRES soon", "(line 2): requires must be a valid semver (e.g. 0.14.0)"),
    ("# nothing\nSYSTEM hi\n", "no FROM line"),
    ("", "no FROM line"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        parse_modelfile(text)
    assert str(caught.value).startswith(message)


def test_second_from_line_is_kept() -> None:
    """Vision models come as two FROM lines, the model and its projector (Ollama's
    parser/parser.go keeps every FROM as a command)."""
    mf = parse_modelfile("FROM ./model.gguf\nFROM ./mmproj.gguf\n")
    assert mf.from_ == "./model.gguf" and mf.more_from == ["./mmproj.gguf"]


def test_error_line_counts_lines_inside_heredocs() -> None:
    with pytest.raises(ModelfileError, match=r"^\(line 5\): unknown parameter 'x'$") as caught:
        parse_modelfile('FROM m\nTEMPLATE """a\n\nb"""\nPARAMETER x 1\n')
    assert caught.value.line == 5
    assert caught.value.msg == "unknown parameter 'x'"


def test_render_modelfile_exact() -> None:
    text = render_modelfile(
        model_name="gemma3:270m",
        from_line="/models/blobs/sha256-abc",
        template="{{ .Prompt }}",
        system="Be terse.",
        parameters=Options(top_p=0.95, stop=["<end_of_turn>", "<eos>"], num_ctx=4096),
        adapters=["/models/blobs/sha256-def"],
        licenses=["Gemma Terms", "MIT"],
        messages=[Message(role="user", content="hi")],
    )
    assert text == '''# Modelfile generated by "ollama show"
# To build a new Modelfile based on this, replace FROM with:
# FROM gemma3:270m

FROM /models/blobs/sha256-abc
TEMPLATE """{{ .Prompt }}"""
SYSTEM """Be terse."""
PARAMETER num_ctx 4096
PARAMETER stop "<end_of_turn>"
PARAMETER stop "<eos>"
PARAMETER top_p 0.95
ADAPTER /models/blobs/sha256-def
LICENSE """Gemma Terms"""
LICENSE """MIT"""
MESSAGE user """hi"""
'''


def test_render_then_parse_round_trips() -> None:
    options = Options(num_keep=24, seed=-1, num_predict=128, top_k=64, top_p=0.95, min_p=0.0,
                      temperature=1.0, repeat_penalty=1.1, stop=["<end_of_turn>", "\n\n", 'a"b\\'],
                      use_mmap=True, num_gpu=-1)
    fields = dict(
        template=GEMMA_TEMPLATE,
        system='Ends with a heredoc closer """\nin the middle and "quotes"',
        adapters=["/path with space/adapter.gguf", " padded "],
        licenses=["Apache License\n\nVersion 2.0", '"quoted"'],
        messages=[Message(role="system", content="s"), Message(role="user", content=""),
                  Message(role="assistant", content='multi\nline "reply"')],
    )
    text = render_modelfile(model_name="herd:latest", from_line="/blobs/sha256-0", parameters=options,
                            **fields)  # type: ignore[arg-type]
    assert parse_modelfile(text) == Modelfile(from_="/blobs/sha256-0", parameters=options,
                                              **fields)  # type: ignore[arg-type]


def test_render_skips_absent_parts() -> None:
    text = render_modelfile(model_name="m:latest", from_line="/b", template=None, system=None,
                            parameters=None, adapters=[], licenses=[], messages=[])
    assert text.endswith("\n\nFROM /b\n")
    assert parse_modelfile(text) == Modelfile(from_="/b")


def test_render_parameters_exact() -> None:
    options = Options(temperature=1.0, top_k=64, top_p=0.95, stop=["<end_of_turn>", 'say "x"\n'],
                      use_mmap=False, num_ctx=4096.0, repeat_penalty=1e-05, min_p=1000000.0)
    assert render_parameters(options) == (
        "min_p                          1e+06\n"
        "num_ctx                        4096\n"
        "repeat_penalty                 1e-05\n"
        'stop                           "<end_of_turn>"\n'
        'stop                           "say \\"x\\"\\n"\n'
        "temperature                    1\n"
        "top_k                          64\n"
        "top_p                          0.95\n"
        "use_mmap                       false"
    )


def test_render_parameters_go_float_forms() -> None:
    lines = render_parameters(Options(top_p=0.0001, min_p=123456.5, temperature=-2.5)).split("\n")
    assert [line.split()[1] for line in lines] == ["123456.5", "-2.5", "0.0001"]
    assert render_parameters(Options()) == ""


def test_options_from_mapping() -> None:
    assert options_from_mapping({
        "temperature": 1, "top_p": 0.9, "num_ctx": 8192.0, "seed": 42, "stop": "<eos>",
        "use_mmap": True, "mirostat": 2, "penalize_newline": True, "num_gpu": None,
    }) == Options(temperature=1.0, top_p=0.9, num_ctx=8192, seed=42, stop=["<eos>"], use_mmap=True)
    assert options_from_mapping({"stop": ["a", "b"]}) == Options(stop=["a", "b"])
    assert options_from_mapping({}) == Options()
    typed = options_from_mapping({"num_ctx": 8192.0, "temperature": 1})
    assert type(typed.num_ctx) is int and type(typed.temperature) is float


@pytest.mark.parametrize(("values", "message"), [
    ({"bogus": 1}, "unknown parameter 'bogus'"),
    ({"num_ctx": 4096.5}, "invalid int value 4096.5 for parameter 'num_ctx'"),
    ({"num_ctx": "4096"}, "invalid int value \"4096\" for parameter 'num_ctx'"),
    ({"seed": True}, "invalid int value true for parameter 'seed'"),
    ({"temperature": "hot"}, "invalid float value \"hot\" for parameter 'temperature'"),
    ({"temperature": False}, "invalid float value false for parameter 'temperature'"),
    ({"use_mmap": 1}, "invalid bool value 1 for parameter 'use_mmap'"),
    ({"stop": ["a", 1]}, "invalid value [\"a\",1] for parameter 'stop': "
                         "expected a string or an array of strings"),
    ({"stop": 5}, "invalid value 5 for parameter 'stop'"),
])
def test_options_from_mapping_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        options_from_mapping(values)
    assert str(caught.value).startswith(message)
    assert caught.value.line is None


def test_draft_line_round_trips() -> None:
    """DRAFT names the draft model of speculative decoding (Ollama's newest Modelfiles)."""
    mf = parse_modelfile("FROM ./model.gguf\ndraft ./small.gguf\nPARAMETER draft_num_predict 6\n")
    assert mf.draft == "./small.gguf" and mf.parameters.draft_num_predict == 6
    text = render_modelfile(model_name="m:latest", from_line="/b", template=None, system=None,
                            parameters=None, adapters=[], licenses=[], messages=[],
                            draft="/blobs/sha256-1")
    assert text.endswith("FROM /b\nDRAFT /blobs/sha256-1\n")
    assert parse_modelfile(text).draft == "/blobs/sha256-1"
