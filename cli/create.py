"""`herd create`: a Modelfile parsed here, its local files uploaded as blobs, then /api/create.

As with `ollama create`, the server only ever sees the JSON form of the Modelfile and digests
of files it already holds, so this works against a remote Herd (or an Ollama).
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
from collections.abc import Callable

import msgspec

from herd.cli.client import HerdClient
from herd.cli.common import CliError
from herd.cli.progress import ProgressDisplay
from herd.protocol.api import CreateRequest
from herd.protocol.modelfile import Modelfile, ModelfileError, parse_modelfile

_CHUNK = 1 << 20
_PATH_PREFIXES = ("./", "../", "/", "~")


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _upload(client: HerdClient, path: pathlib.Path, display: ProgressDisplay) -> str:
    """Put the file in the server's blob store unless it is there already; return its digest."""
    digest = _sha256(path)
    if client.has_blob(digest):
        return digest
    text = f"copying file {digest}"
    client.create_blob(path, digest,
                       lambda sent, size: display.update(text, total=size, completed=sent))
    return digest


def _local_path(value: str, base: pathlib.Path) -> pathlib.Path | None:
    """The file or folder a FROM/ADAPTER value names, relative to the Modelfile, if it exists."""
    path = base / pathlib.Path(value).expanduser()
    if path.exists():
        return path
    if value.startswith(_PATH_PREFIXES):
        raise CliError(f"{value}: no such file or directory")
    return None


def _model_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
    """What a FROM path uploads: the file itself, or a folder's safetensors model (else GGUF)."""
    if path.is_file():
        return {path.name: path}
    files = sorted(p for p in path.iterdir() if p.is_file())
    if any(p.suffix == ".safetensors" for p in files):
        # As ollama: weights, every JSON (config, tokenizer*, generation config) and the
        # SentencePiece model that older tokenizers ship instead of tokenizer.json.
        chosen = [p for p in files
                  if p.suffix in (".safetensors", ".json") or p.name == "tokenizer.model"]
    else:
        chosen = [p for p in files if p.suffix == ".gguf"]
    if not chosen:
        raise CliError(f"no safetensors or GGUF files found in {path}")
    return {p.relative_to(path).as_posix(): p for p in chosen}


def _read_modelfile(option: str | None) -> tuple[str, pathlib.Path]:
    path = pathlib.Path(option or "Modelfile")
    if option is None and not path.exists():  # like ollama: no Modelfile means "this folder"
        return "FROM .\n", pathlib.Path.cwd()
    return path.read_text(encoding="utf-8"), path.resolve().parent


def build_request(name: str, mf: Modelfile, base: pathlib.Path, quantize: str,
                  upload: Callable[[dict[str, pathlib.Path]], dict[str, str]]) -> CreateRequest:
    """The JSON /api/create body for a Modelfile, its local paths turned into uploaded blobs."""
    # Every path is checked before the first upload, so a typo fails fast.
    source = _local_path(mf.from_, base)
    files = _model_files(source) if source else {}
    for value in mf.more_from:  # a vision projector beside the model (two FROM lines)
        path = _local_path(value, base)
        if path is None:
            raise CliError(f"{value}: no such file or directory")
        files.update({(f"projector/{k}" if k in files else k): p
                      for k, p in _model_files(path).items()})
    adapters: dict[str, pathlib.Path] = {}
    for value in mf.adapters:
        path = _local_path(value, base)
        if path is None:
            raise CliError(f"{value}: no such file or directory")
        adapters.update(_model_files(path))
    draft = _local_path(mf.draft, base) if mf.draft is not None else None
    if mf.draft is not None and draft is None:
        raise CliError(f"DRAFT {mf.draft}: no such file or directory (a draft model is a "
                       "local GGUF file or safetensors folder)")
    draft_files = _model_files(draft) if draft else {}
    parameters = msgspec.to_builtins(mf.parameters)  # set fields only: Options omits defaults
    return CreateRequest(
        draft_files=upload(draft_files) if draft_files else None,
        model=name,
        from_="" if source else mf.from_,
        files=upload(files) if files else None,
        adapters=upload(adapters) if adapters else None,
        template=mf.template, system=mf.system, license=mf.licenses or None,
        parameters=parameters or None, messages=mf.messages or None,
        quantize=quantize, stream=True)


def cmd_create(args: argparse.Namespace) -> int:
    text, base = _read_modelfile(args.file)
    try:  # parsed here, like ollama, so the server only ever sees the JSON form
        mf = parse_modelfile(text)
    except ModelfileError as e:
        raise CliError(str(e)) from None
    with HerdClient() as client, ProgressDisplay() as display:
        def upload(files: dict[str, pathlib.Path]) -> dict[str, str]:
            display.update("gathering model components")
            return {name: _upload(client, path, display) for name, path in files.items()}

        # A stream that breaks off before "success" may have left no model: a CliError.
        client.create(build_request(args.model, mf, base, args.quantize or "", upload),
                      display.status)
    print("success")
    return 0
