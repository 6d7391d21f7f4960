"""Quantize a GGUF model with llama.cpp's quantizer, as a library call or a child process.

The gateway never imports llama_cpp (loading it pulls in the whole native backend), so it runs

    python -m herd.worker.quantize SRC DST TYPE

and reads one JSON object per stdout line: ``{"completed": n, "total": m}`` while it runs,
then ``{"status": "done"}`` or ``{"error": "..."}`` (exit status 1). The line types are the
msgspec Structs below so the gateway can decode them with the same definitions.

Everything at module level is importable without llama_cpp: ``QUANT_TYPES``,
``canonical_quant_type`` and ``check_source`` are what the gateway validates a request with
before it spawns anything. llama_cpp is imported only inside ``quantize``.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

__all__ = [
    "QUANT_TYPES",
    "QuantizeDone",
    "QuantizeError",
    "QuantizeFailed",
    "QuantizeProgress",
    "SOURCE_TYPES",
    "canonical_quant_type",
    "check_source",
    "decode_line",
    "estimate_output_size",
    "main",
    "quantize",
]

# llama.cpp's `enum llama_ftype` values. Hard-coded rather than read from llama_cpp so the
# gateway can validate names without loading the native library; they are part of the GGUF
# on-disk format (general.file_type), so they do not change between releases. The tests
# check them against llama_cpp's LLAMA_FTYPE_* constants.
QUANT_TYPES: dict[str, int] = {
    "F32": 0,  # LLAMA_FTYPE_ALL_F32
    "F16": 1,  # LLAMA_FTYPE_MOSTLY_F16
    "Q8_0": 7,  # LLAMA_FTYPE_MOSTLY_Q8_0
    "Q4_K_S": 14,  # LLAMA_FTYPE_MOSTLY_Q4_K_S
    "Q4_K_M": 15,  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    "BF16": 32,  # LLAMA_FTYPE_MOSTLY_BF16
}

# Ollama's spelling: Q4_K without a size suffix means the medium mix.
_ALIASES: dict[str, str] = {"Q4_K": "Q4_K_M"}

# Only unquantized weights can be quantized: llama.cpp refuses to requantize by default,
# and requantizing compounds the error anyway.
SOURCE_TYPES: frozenset[str] = frozenset({"F16", "BF16", "F32"})

# Approximate bits per weight of the 2-D tensors for each target, used only to size the
# progress total. K-quant mixes are llama.cpp's published averages (Q4_K_M keeps some
# tensors at Q6_K, hence more than 4.5); Q8_0 is 34 bytes per 32 weights.
_BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q4_K_S": 4.58,
    "Q4_K_M": 4.89,
}

# How often the output file is stat()ed for progress; also bounds how long a SIGTERM
# waits before the partial file is removed.
_POLL_S = 0.25

# ggml_log_level values of the bundled ggml (NONE, DEBUG, INFO, WARN, ERROR, CONT);
# the table in llama_cpp/_logger.py is an older order, so these are not taken from there.
_LOG_WARN = 3
_LOG_ERROR = 4
_LOG_CONT = 5


class QuantizeError(Exception):
    """A user-facing quantization failure; str(e) is the message the API returns."""


class QuantizeProgress(msgspec.Struct, omit_defaults=False):
    """Bytes of the output written so far out of the estimated output size."""

    completed: int
    total: int


class QuantizeDone(msgspec.Struct):
    status: str = "done"


class QuantizeFailed(msgspec.Struct):
    error: str


_LINE_DECODER = msgspec.json.Decoder(dict[str, Any])


def decode_line(line: bytes | str) -> QuantizeProgress | QuantizeDone | QuantizeFailed:
    """Parse one stdout line of ``python -m herd.worker.quantize`` (for the gateway).

    The three shapes share no tag field (the wire format mirrors Ollama's progress objects),
    so they are told apart by which key is present.
    """
    obj = _LINE_DECODER.decode(line)
    if "error" in obj:
        return msgspec.convert(obj, QuantizeFailed)
    if "status" in obj:
        return msgspec.convert(obj, QuantizeDone)
    return msgspec.convert(obj, QuantizeProgress)


def canonical_quant_type(name: str) -> str:
    """Return the canonical upper-case type name for a user-supplied ``quantize`` value."""
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in QUANT_TYPES:
        raise QuantizeError(f"unsupported quantization type {name} - supported types are "
                            "F32, F16, Q4_K_S, Q4_K_M, Q8_0")
    return upper


def check_source(file_type_name: str) -> None:
    """Raise unless a model whose general.file_type is ``file_type_name`` can be quantized."""
    if file_type_name.strip().upper() not in SOURCE_TYPES:
        raise QuantizeError("quantization is only supported for F16, BF16 and F32 models")


def _file_type_name(file_type: int) -> str:
    for name, value in QUANT_TYPES.items():
        if value == file_type:
            return name
    try:
        import gguf

        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return str(file_type)


def estimate_output_size(src: str, quant_type: str) -> tuple[int, str | None]:
    """Estimate the quantized file's size and return it with the source's file type name.

    The estimate keeps the header and 1-D tensors (norms stay F32 in llama.cpp) at their
    source size and scales every other tensor to the target's average bits per weight. It is
    only a progress total: llama.cpp picks per-tensor types itself (and falls back to other
    types for rows that don't fit a K-quant block), so the real size differs by a few percent.
    The file type name is None when the file does not declare general.file_type.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(src, "r")
    except (OSError, ValueError, KeyError) as e:
        raise QuantizeError(f"unable to read {src} as GGUF: {e}") from e
    bpw = _BITS_PER_WEIGHT[quant_type]
    file_size = os.path.getsize(src)
    tensor_bytes = 0
    estimate = 0.0
    for t in reader.tensors:
        tensor_bytes += int(t.n_bytes)
        if len(t.shape) >= 2 and sum(1 for d in t.shape if d > 1) >= 2:
            estimate += int(t.n_elements) * bpw / 8
        else:
            estimate += int(t.n_bytes)
    header = max(file_size - tensor_bytes, 0)
    file_type: str | None = None
    field = reader.fields.get("general.file_type")
    if field is not None and field.data:
        file_type = _file_type_name(int(field.parts[field.data[0]][0]))
    return max(int(header + estimate), 1), file_type


class _LogCapture:
    """Collects llama.cpp's error log lines so a failed quantize can say why.

    llama_model_quantize only returns 1 on failure; the reason (e.g. "requantizing from type
    q4_K is disabled") goes to the log. Per-tensor INFO lines are dropped unless
    HERD_LLAMA_VERBOSE=1 because the child's stderr is for problems.
    """

    def __init__(self, llama_cpp: Any) -> None:
        self._L = llama_cpp
        self.errors: list[str] = []
        self._last_level = 0
        self._verbose = os.environ.get("HERD_LLAMA_VERBOSE") == "1"
        self._prev_cb = llama_cpp.llama_log_callback()
        self._prev_ud = ctypes.c_void_p()
        # The CFUNCTYPE object must outlive every call llama.cpp makes through it.
        self._cb = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user_data: Any) -> None:
        msg = (text or b"").decode("utf-8", "replace")
        effective = self._last_level if level == _LOG_CONT else level
        if level != _LOG_CONT:
            self._last_level = level
        if effective == _LOG_ERROR:
            if level == _LOG_CONT and self.errors:
                self.errors[-1] += msg
            else:
                self.errors.append(msg)
        if self._verbose or effective in (_LOG_WARN, _LOG_ERROR):
            sys.stderr.write(msg)
            sys.stderr.flush()

    def __enter__(self) -> _LogCapture:
        self._L.llama_log_get(ctypes.byref(self._prev_cb), ctypes.byref(self._prev_ud))
        self._L.llama_log_set(self._cb, ctypes.c_void_p(0))
        return self

    def __exit__(self, *_exc: object) -> None:
        # Give the process's previous logger (llama_cpp._logger's) back so later model
        # loads in the same process log as before.
        self._L.llama_log_set(self._prev_cb, self._prev_ud)

    def reason(self) -> str:
        for line in reversed(self.errors):
            line = line.strip()
            if line:
                # "llama_model_quantize: failed to quantize: <why>" -> "<why>"
                return line.rsplit("failed to quantize: ", 1)[-1]
        return ""


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def quantize(src: str, dst: str, quant_type: str,
             on_progress: Callable[[int, int], None]) -> None:
    """Quantize GGUF ``src`` to ``dst`` as ``quant_type`` (any name canonical_quant_type takes).

    llama_model_quantize_params has no progress callback, so progress is the size of the
    output file as llama.cpp writes it, against ``estimate_output_size`` - an estimate, not
    an exact byte count. ``on_progress(completed, total)`` is called from the calling thread:
    first with (0, total), then whenever the file grew (clamped below total), and finally
    with (total, total) once ``dst`` is in place.

    The output is written to a temporary file beside ``dst`` and renamed on success, so
    ``dst`` never holds a partial model; on failure (or an exception such as
    KeyboardInterrupt/SystemExit while waiting) the partial file is removed and
    QuantizeError is raised for quantizer failures.
    """
    qtype = canonical_quant_type(quant_type)
    if not os.path.isfile(src):
        raise QuantizeError(f"source model not found: {src}")
    total, source_type = estimate_output_size(src, qtype)
    if source_type is not None:
        check_source(source_type)

    import llama_cpp

    out_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(out_dir):
        raise QuantizeError(f"output directory not found: {out_dir}")
    # Same directory as dst so the final rename is atomic. A unique name rather than
    # mkstemp: llama.cpp creates the file itself, so it gets the umask's mode instead of
    # mkstemp's 0600.
    tmp = os.path.join(out_dir, f".{os.path.basename(dst)}.{secrets.token_hex(6)}.partial")

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = os.cpu_count() or 1
    result: list[int | BaseException] = []

    def run() -> None:
        try:
            result.append(llama_cpp.llama_model_quantize(src.encode(), tmp.encode(),
                                                         ctypes.byref(params)))
        except BaseException as e:  # reported to the waiting thread, not lost in this one
            result.append(e)

    ok = False
    try:
        with _LogCapture(llama_cpp) as log:
            llama_cpp.llama_backend_init()
            # The ctypes call releases the GIL; running it on its own thread keeps this one
            # free to report progress and to handle signals (a killed child then still
            # removes its partial file). daemon: a cancelled quantize must not block exit.
            worker = threading.Thread(target=run, name="llama-quantize", daemon=True)
            on_progress(0, total)
            worker.start()
            last = 0
            while worker.is_alive():
                worker.join(_POLL_S)
                size = min(_file_size(tmp), total - 1)
                if size > last:
                    last = size
                    on_progress(size, total)
        outcome = result[0] if result else RuntimeError("quantizer thread ended without a result")
        if isinstance(outcome, BaseException):
            raise QuantizeError(f"quantization failed: {outcome}") from outcome
        if outcome != 0:
            why = log.reason()
            raise QuantizeError(f"quantization to {qtype} failed"
                                + (f": {why}" if why else ""))
        try:
            os.replace(tmp, dst)
        except OSError as e:
            raise QuantizeError(f"unable to write {dst}: {e}") from e
        ok = True
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    on_progress(total, total)


def _raise_exit(signum: int, _frame: object) -> None:
    # Turn SIGTERM into an exception so quantize()'s cleanup removes the partial file.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m herd.worker.quantize SRC DST TYPE``: JSON progress lines on stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer

    def emit(msg: msgspec.Struct) -> None:
        out.write(encoder.encode(msg) + b"\n")
        out.flush()

    if len(args) != 3:
        emit(QuantizeFailed(error="usage: python -m herd.worker.quantize SRC DST TYPE"))
        return 2
    src, dst, qtype = args
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)
    try:
        quantize(src, dst, qtype, lambda done, total: emit(QuantizeProgress(done, total)))
    except QuantizeError as e:
        emit(QuantizeFailed(error=str(e)))
        return 1
    except Exception as e:  # the gateway only sees stdout: never end without a final line
        import traceback

        traceback.print_exc()
        emit(QuantizeFailed(error=f"quantization failed: {e}"))
        return 1
    emit(QuantizeDone())
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:  # SIGTERM, after quantize() removed its partial file
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # e.g. the gateway closed our stdout (BrokenPipeError)
        code = 1
    try:
        sys.stdout.flush()
    except OSError:
        pass
    # os._exit: a quantizer thread cancelled by SIGTERM may still be inside llama.cpp, and
    # interpreter shutdown must not wait for (or tear down state under) it.
    os._exit(code)
