"""Built-in Jinja chat templates for model families whose GGUF carries none.

Shared: the runner renders with them, the gateway shows them in /api/show.
"""

from __future__ import annotations

import re

# gemma3's GGUF ships without a template; this is Gemma's documented turn format.
GEMMA_TEMPLATE = """{{ bos_token }}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set first_user_prefix = '' -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{ '<start_of_turn>' + role + '\n' + ((first_user_prefix if loop.first else '') + message['content']) | trim + '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<start_of_turn>model\n' }}
{%- endif -%}"""

CHATML_TEMPLATE = """{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\n' }}
{%- endif -%}"""

LLAMA3_TEMPLATE = """{{ bos_token }}
{%- for message in messages -%}
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif -%}"""

BUILTIN_TEMPLATES: dict[str, str] = {
    "gemma": GEMMA_TEMPLATE,
    "gemma2": GEMMA_TEMPLATE,
    "gemma3": GEMMA_TEMPLATE,
    "gemma3n": GEMMA_TEMPLATE,
    "llama": LLAMA3_TEMPLATE,
    "qwen2": CHATML_TEMPLATE,
    "qwen3": CHATML_TEMPLATE,
}


def builtin_template(family: str) -> str:
    return BUILTIN_TEMPLATES.get(family, CHATML_TEMPLATE)


_GO_OPEN = re.compile(r"\{\{-?\s*(\.|\$|if\s|range\s|with\s|else\b|end\b|/\*)")
_GO_FIELD = re.compile(r"[\s(]\.[A-Z]")


def is_go_template(source: str) -> bool:
    """Ollama's TEMPLATE layers are Go text/templates ({{ .Prompt }}, {{ if … }}{{ end }});
    Jinja writes its control flow as {% … %} and never starts an expression with `.` or `$`.

    Linear in the source, since it runs on the gateway's event loop at create: `{{ … .Field`
    is looked for per stretch without `}` (a regex `{{[^}]*` rescanned from every `{{`)."""
    if "{%" in source:
        return False
    if _GO_OPEN.search(source):
        return True
    for stretch in source.split("}"):
        first = stretch.find("{{")
        if first >= 0 and _GO_FIELD.search(stretch, first + 2):
            return True
    return False
