"""`herd run MODEL` on a terminal: ollama's chat at `>>> `, with its slash commands.

The conversation is kept and sent whole with every message; `/clear` forgets it. Ctrl-C stops
an answer (the stream is closed, which aborts it in the server) and returns to the prompt;
Ctrl-D or /bye ends the chat. Lines are read with input(), so GNU readline gives line editing
where Python has it, and the lines typed are kept in ~/.ollama/history as ollama keeps them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from herd.cli.client import HerdClient
from herd.cli.line_history import history_file, persistent_history
from herd.cli.models import show_summary
from herd.cli.session import THINK_VALUES, Session, stream_answer
from herd.protocol.api import Message, ShowResponse
from herd.protocol.modelfile import ModelfileError, parse_modelfile

ReadLine = Callable[[str], str]

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think [level]     Enable thinking
  /set nothink           Disable thinking
"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
HELP_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters
"""


def _usage(text: str) -> None:
    print(text, file=sys.stderr)  # ollama writes help to stderr, with a blank line after


def parameter_value(name: str, values: list[str]) -> object:
    """A `/set parameter` value typed as a Modelfile's PARAMETER line would be; several values
    only for `stop`. Raises ModelfileError for an unknown name or a bad value."""
    lines = values if name == "stop" else values[:1]
    text = "FROM model\n" + "".join(f"PARAMETER {name} {value}\n" for value in lines)
    value = getattr(parse_modelfile(text).parameters, name, None)
    if value is None:  # a legacy parameter the parser drops
        raise ModelfileError(f"unknown parameter '{name}'")
    return value


def _set(words: list[str], line: str, session: Session) -> None:
    if len(words) < 2:
        _usage(HELP_SET)
        return
    what = words[1]
    if what == "parameter":
        if len(words) < 4:
            _usage(HELP_PARAMETERS)
            return
        try:
            session.options[words[2]] = parameter_value(words[2], words[3:])
        except ModelfileError as e:
            print(f"Couldn't set parameter: {e.msg}")
            return
        print(f"Set parameter '{words[2]}' to '{', '.join(words[3:])}'")
    elif what == "system":
        text = line.split(None, 2)[2] if len(words) > 2 else ""
        if not text:
            _usage(HELP_SET)
            return
        if text.startswith('"""') and text.endswith('"""') and len(text) >= 6:
            text = text[3:-3]
        session.system = text
        print("Set system message.")
    elif what == "format":
        if len(words) < 3 or words[2] != "json":
            print("Invalid or missing format. For 'json' mode use '/set format json'")
            return
        session.format = "json"
        print("Set format to 'json' mode.")
    elif what == "noformat":
        session.format = None
        print("Disabled format.")
    elif what in ("verbose", "quiet"):
        session.verbose = what == "verbose"
        print(f"Set '{what}' mode.")
    elif what == "think":
        level = words[2] if len(words) > 2 else "true"
        if level not in THINK_VALUES:
            print(f"Invalid think level '{level}': use high, medium or low")
            return
        session.think = THINK_VALUES[level]
        print("Set 'think' mode." if level == "true" else f"Set 'think' mode to '{level}'.")
    elif what == "nothink":
        session.think = False
        print("Set 'nothink' mode.")
    else:
        print(f"Unknown command '/set {what}'. Type /? for help")


def _show(words: list[str], session: Session, show: ShowResponse) -> None:
    if len(words) < 2:
        _usage(HELP_SHOW)
        return
    what = words[1]
    if what == "info":
        print(show_summary(show), end="")
    elif what == "license":
        print(show.license or "No license was specified for this model.")
    elif what == "modelfile":
        print(show.modelfile)
    elif what == "parameters":
        print("Model defined parameters:")
        if show.parameters:
            print("".join(f"  {line}\n" for line in show.parameters.splitlines()))
        else:
            print("  No additional parameters were specified for this model.\n")
        if session.options:
            print("User defined parameters:")
            print("".join(f"  {name:<30} {value}\n" for name, value in session.options.items()))
    elif what == "system":
        system = session.system or show.system
        print(f"{system}\n" if system else "No system message was specified for this model.")
    elif what == "template":
        print(show.template or "No prompt template was specified for this model.")
    else:
        print(f"Unknown command '/show {what}'. Type /? for help")


def run_command(line: str, session: Session, show: ShowResponse) -> bool:
    """One slash command; False when it ends the chat."""
    words = line.split()
    command = words[0]
    if command in ("/bye", "/exit"):
        return False
    if command == "/clear":
        session.history.clear()
        print("Cleared session context")
    elif command == "/set":
        _set(words, line, session)
    elif command == "/show":
        _show(words, session, show)
    elif command in ("/?", "/help"):
        topic = words[1].lstrip("/") if len(words) > 1 else ""
        _usage({"set": HELP_SET, "show": HELP_SHOW}.get(topic, HELP))
    else:
        print(f"Unknown command '{command}'. Type /? for help")
    return True


def _read_message(first: str, read_line: ReadLine) -> str:
    """A message; one that starts with \"\"\" goes on over `... ` lines until one ends with it."""
    if not first.startswith('"""'):
        return first
    text = first[3:]
    if text.endswith('"""'):
        return text[:-3]
    lines = [text]
    while True:
        line = read_line("... ")
        if line.endswith('"""'):
            lines.append(line[:-3])
            return "\n".join(lines)
        lines.append(line)


def _replay(show: ShowResponse) -> None:
    """The model's MESSAGE layers, shown as ollama shows them when a chat starts."""
    for message in show.messages or []:
        if message.role == "user":
            print(f">>> {message.content}")
        elif message.role == "assistant":
            print(f"{message.content}\n")


def chat_loop(client: HerdClient, session: Session, show: ShowResponse,
              read_line: ReadLine = input) -> int:
    """Reads messages and commands until EOF or /bye; every answer joins the history."""
    if read_line is input:  # a terminal: readline's line editing, and ollama's saved history
        with persistent_history(history_file()):
            return _chat(client, session, show, read_line)
    return _chat(client, session, show, read_line)


def _chat(client: HerdClient, session: Session, show: ShowResponse, read_line: ReadLine) -> int:
    _replay(show)
    while True:
        try:
            line = read_line(">>> ")
            if line.startswith("/"):
                if not run_command(line, session, show):
                    return 0
                continue
            line = _read_message(line, read_line)
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print("\nUse Ctrl + d or /bye to exit.")
            continue
        if not line.strip():
            continue
        session.history.append(Message(role="user", content=line))
        answer = stream_answer(client, session, session.history, "\n\n")
        if answer is None:  # stopped with Ctrl-C: the question goes too, like the answer
            session.history.pop()
            continue
        session.history.append(Message(role="assistant", content=answer))
