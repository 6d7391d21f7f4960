"""A TEMPLATE checked before it is stored: parsed as Go or as Jinja, with bounded work.

/api/create runs this on the gateway; the runner checks again (and bounds the render) for the
templates requests bring. Both parsers recurse per nesting level, so nesting is counted first,
in a linear pass, and a too-deep template is refused before either parser sees it.
"""

from __future__ import annotations

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from herd.protocol.templates.builtin import is_go_template
from herd.protocol.templates.go import GoTemplate, TemplateError

# Real chat templates are under 20 kB; a 1 MiB Jinja template took 9 s to compile, in the
# runner's main loop when a request brings it.
MAX_TEMPLATE_CHARS = 128 << 10
MAX_JINJA_NESTING = 100  # brackets inside one expression


def check_jinja_nesting(env: jinja2.Environment, source: str) -> None:
    depth = 0
    for _, kind, value in env.lex(source):
        if kind != "operator":
            continue
        if value in ("(", "[", "{"):
            depth += 1
            if depth > MAX_JINJA_NESTING:
                raise TemplateError("template error: expression nested too deeply")
        elif value in (")", "]", "}"):
            depth = max(depth - 1, 0)


def check_template(source: str) -> None:
    """Raises TemplateError for a template that cannot be used (Ollama refuses a template it
    cannot parse at create)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template error: longer than {MAX_TEMPLATE_CHARS} characters")
    if is_go_template(source):
        GoTemplate(source)
        return
    env = ImmutableSandboxedEnvironment()
    try:
        check_jinja_nesting(env, source)
        env.parse(source)
    except jinja2.TemplateError as e:
        raise TemplateError(f"template error: {e}") from e
    except (RecursionError, MemoryError) as e:
        raise TemplateError(f"template error: {type(e).__name__}") from e
