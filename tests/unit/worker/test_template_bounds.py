"""Templates a request brings do bounded work: every way past a bound is a TemplateError (the
request's 400), never another exception (which would end the runner) or a stall."""

from __future__ import annotations

import pytest

from herd.protocol.templates.builtin import is_go_template
from herd.protocol.templates.check import check_template
from herd.protocol.templates.go import TemplateError as GoTemplateError
from herd.protocol.templates.go_parse import parse_template
from herd.protocol.wire import ChatTurn
from herd.worker.templates.go import template_from_source
from herd.worker.templates.jinja import TemplateError

TURNS = [ChatTurn("user", "hi")]
JINJA = "{% if 1 %}{% endif %}"  # makes a source Jinja for is_go_template


def render(source: str) -> str:
    return template_from_source(source, bos_token="<s>", eos_token="</s>").render(TURNS)


@pytest.mark.parametrize("source, message", [
    ("{{ .Prompt }}{{ 'ab' }}", "malformed character constant"),
    ("{{ .Prompt }}{{ '' }}", "unexpected"),
    ("{{ .Prompt }}{{ 1e999 }}", "illegal number syntax"),
    ("{{ .Prompt }}{{ -1e999 }}", "illegal number syntax"),
    ("{{ .Prompt }}{{ " + "9" * 5000 + " }}", "illegal number syntax"),
    ("{{ .Prompt }}{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nested too deeply"),
    ("{{ .Prompt }}" + "{{ if 1 }}" * 5000 + "{{ end }}" * 5000, "nested too deeply"),
    ("{{ .Prompt }}{{ if 1 }}" + "{{ else if 1 }}" * 500 + "{{ end }}", "nested too deeply"),
    ('{{ $x := "ab" }}{{ range 64 }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ .Prompt }}',
     "exceeds the limit"),
])
def test_go_templates_past_a_bound_fail_with_a_template_error(source: str, message: str) -> None:
    assert is_go_template(source)
    with pytest.raises(TemplateError, match=message):
        render(source)


def test_go_numbers_past_int64_still_render() -> None:
    assert render("{{ .Prompt }} {{ 9223372036854775807 }}") == "hi 9223372036854775807"
    assert render("{{ .Prompt }} {{ 99999999999999999999999 }}") == "hi 1e+23"


@pytest.mark.parametrize("source, message", [
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nested too deeply"),
    ("{{ " + "[" * 5000 + "]" * 5000 + " }}", "nested too deeply"),
    ("{% if 1 %}" * 3000 + "x" + "{% endif %}" * 3000, "template error"),
    ("{{ 'a' * 10**10 }}", "too large"),
    ("{{ [1] * 10**10 }}", "too large"),
    ("{{ 10**10 * 10**20000 }}", "too large"),
    ("{{ 7 ** 1000000 }}", "too large"),
    ("{{ 'x'|center(10**10) }}", "too large"),
    ("{{ 'x'|indent(10**10) }}", "too large"),
    ("{{ '%0999999999d' % 1 }}", "format width"),
    ("{{ '{:0999999999}'.format(1) }}", "format width"),
    ("{{ '%0999999999d'|format(1) }}", "format width"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s }}", "too large"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}{{ ns.s }}", "too large"),
    ("{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('ab', 64) }}",
     "too large"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
     "too many loop iterations|took too long"),
    ("{{ lipsum(10**9) }}", "too large"),
])
def test_jinja_templates_past_a_bound_fail_with_a_template_error(source: str, message: str) -> None:
    source += JINJA
    assert not is_go_template(source)
    with pytest.raises(TemplateError, match=message):
        render(source)


def test_jinja_arithmetic_within_bounds_still_works() -> None:
    assert render("{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%3d' % 7 }} {{ [1, 2] + [3] }}" + JINJA) == \
        "1024 ababab   7 [1, 2, 3]"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source", [
    "{{" * 50_000,  # every `{{` unclosed: a lazy regex scanned to the end from each one
    "{{ x" * 25_000,
    "{{ {{ " * 20_000 + "}",
    "{{ ." * 25_000,
    "{{- " * 25_000,
])
def test_go_template_detection_and_parsing_are_linear_on_100_kb(source: str) -> None:
    """Both ran a regex that rescanned the rest of the source from every `{{`: 8 kB took 1.3 s
    holding the gateway's event loop at create. The 30 s timeout is far above linear work and
    far below quadratic work on 100 kB (about 200 s)."""
    is_go_template(source)
    try:
        parse_template(source)
    except GoTemplateError:
        pass
    try:
        check_template(source)
    except GoTemplateError:
        pass


def test_action_scanning_keeps_trim_markers() -> None:
    assert render("a  {{- .Prompt -}}  b") == "ahib"
    assert render("{{ .Prompt }} {{- /* c */ -}} !") == "hi!"
    with pytest.raises(TemplateError, match="unclosed action"):
        render("{{ .Prompt }} {{ .Prompt")


def test_a_template_past_the_size_limit_is_refused_at_create() -> None:
    with pytest.raises(GoTemplateError, match="longer than"):
        check_template("{{ x }}" * 30_000)
