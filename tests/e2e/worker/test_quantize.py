"""herd.worker.quantize against the real llama.cpp quantizer on tiny random-weight models."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import gguf
import llama_cpp
import msgspec
import numpy as np
import pytest

from support.tiny_models import write_tiny_llama
from herd.worker.quantize import (QUANT_TYPES, QuantizeDone, QuantizeError, QuantizeFailed,
                             QuantizeProgress, canonical_quant_type, check_source, decode_line,
                             quantize)

from support import ROOT as REPO  # noqa: E402

# K-quant blocks hold 256 weights per row: embedding 256 (and the writer's 2x feed-forward
# of 512) keeps every matrix row a whole number of blocks, so no tensor falls back.
EMBD = 256


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("src") / "tiny-f32.gguf",
                            embedding_length=EMBD, block_count=2, head_count=4)


def file_type_of(path: pathlib.Path) -> int:
    field = gguf.GGUFReader(path, "r").fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


def generate_tokens(path: pathlib.Path, n: int) -> int:
    llm = llama_cpp.Llama(str(path), n_ctx=128, verbose=False)
    try:
        out = llm.create_completion("hello world", max_tokens=n, temperature=0.0)
        return int(out["usage"]["completion_tokens"])
    finally:
        llm.close()


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_quant_type_constants_match_llama_cpp() -> None:
    assert QUANT_TYPES == {
        "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
        "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
        "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
        "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    }


@pytest.mark.parametrize(("name", "canonical"), [
    ("q4_K_M", "Q4_K_M"), ("Q4_K_M", "Q4_K_M"), ("q4_k_m", "Q4_K_M"),
    ("q4_K", "Q4_K_M"), ("Q4_K", "Q4_K_M"),
    ("q4_K_S", "Q4_K_S"), ("q8_0", "Q8_0"), ("f16", "F16"), ("F32", "F32"), ("bf16", "BF16"),
])
def test_canonical_quant_type(name: str, canonical: str) -> None:
    assert canonical_quant_type(name) == canonical


@pytest.mark.parametrize("name", ["q3_K_M", "q4_0", "int8", "", "Q4_K_X"])
def test_canonical_quant_type_rejects_unknown(name: str) -> None:
    with pytest.raises(QuantizeError) as e:
        canonical_quant_type(name)
    assert str(e.value) == (f"unsupported quantization type {name} - supported types are "
                            "F32, F16, Q4_K_S, Q4_K_M, Q8_0")


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "f16"])
def test_check_source_accepts_unquantized(name: str) -> None:
    check_source(name)


@pytest.mark.parametrize("name", ["Q4_K_M", "Q8_0", "Q4_0", ""])
def test_check_source_rejects_quantized(name: str) -> None:
    with pytest.raises(QuantizeError,
                       match=r"^quantization is only supported for F16, BF16 and F32 models$"):
        check_source(name)


@pytest.mark.parametrize(("qtype", "ftype"), [
    ("q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0),
    ("q4_K_M", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("Q4_K_S", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S),
    ("q4_K", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("f16", llama_cpp.LLAMA_FTYPE_MOSTLY_F16),
])
def test_quantize_f32_model(f32_model: pathlib.Path, tmp_path: pathlib.Path, qtype: str,
                            ftype: int) -> None:
    dst = tmp_path / f"out-{qtype}.gguf"
    progress: list[tuple[int, int]] = []
    quantize(str(f32_model), str(dst), qtype, lambda done, total: progress.append((done, total)))

    assert dst.is_file()
    assert dst.stat().st_size < f32_model.stat().st_size
    assert file_type_of(dst) == ftype
    assert leftovers(tmp_path) == []

    # Progress: starts at 0, never decreases, one fixed total, ends at exactly total.
    total = progress[0][1]
    assert progress[0] == (0, total)
    assert progress[-1] == (total, total)
    assert all(t == total for _, t in progress)
    dones = [d for d, _ in progress]
    assert dones == sorted(dones)
    # The total is an estimate of the output size; it should be in the right ballpark.
    assert 0.8 < dst.stat().st_size / total < 1.25

    assert generate_tokens(dst, 4) == 4


def test_quantize_f16_source(tmp_path: pathlib.Path) -> None:
    src = write_tiny_llama(tmp_path / "tiny-f16.gguf", embedding_length=EMBD,
                           file_type_f32=False)
    dst = tmp_path / "q8.gguf"
    quantize(str(src), str(dst), "Q8_0", lambda done, total: None)
    assert file_type_of(dst) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert dst.stat().st_size < src.stat().st_size
    assert generate_tokens(dst, 4) == 4


def test_quantize_unknown_type_errors(f32_model: pathlib.Path, tmp_path: pathlib.Path) -> None:
    dst = tmp_path / "out.gguf"
    with pytest.raises(QuantizeError, match="unsupported quantization type q2_K"):
        quantize(str(f32_model), str(dst), "q2_K", lambda done, total: None)
    assert list(tmp_path.iterdir()) == []


def test_quantize_rejects_quantized_source(f32_model: pathlib.Path,
                                           tmp_path: pathlib.Path) -> None:
    q8 = tmp_path / "q8.gguf"
    quantize(str(f32_model), str(q8), "q8_0", lambda done, total: None)
    dst = tmp_path / "q4.gguf"
    with pytest.raises(QuantizeError, match="only supported for F16, BF16 and F32"):
        quantize(str(q8), str(dst), "q4_K_M", lambda done, total: None)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_quantizer_failure_reports_reason_and_cleans_up(tmp_path: pathlib.Path) -> None:
    # Valid GGUF, F32 file type, but an architecture llama.cpp does not know: the failure
    # happens inside llama_model_quantize, after its output file was opened.
    src = tmp_path / "bogus.gguf"
    writer = gguf.GGUFWriter(src, "no-such-arch")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor("token_embd.weight", np.zeros((4, EMBD), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    dst = tmp_path / "out.gguf"
    with pytest.raises(QuantizeError) as e:
        quantize(str(src), str(dst), "q8_0", lambda done, total: None)
    assert str(e.value).startswith("quantization to Q8_0 failed: ")
    assert "no-such-arch" in str(e.value)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def run_cli(*args: str) -> tuple[int, list[bytes]]:
    proc = subprocess.run([sys.executable, "-m", "herd.worker.quantize", *args], cwd=REPO,
                          capture_output=True, timeout=60)
    return proc.returncode, proc.stdout.splitlines()


def test_cli_quantizes_with_progress_lines(f32_model: pathlib.Path,
                                           tmp_path: pathlib.Path) -> None:
    dst = tmp_path / "cli-q4.gguf"
    rc, lines = run_cli(str(f32_model), str(dst), "Q4_K_M")
    assert rc == 0, lines

    raw = [msgspec.json.decode(line) for line in lines]
    assert raw[-1] == {"status": "done"}
    progress = raw[:-1]
    assert progress and all(set(p) == {"completed", "total"} for p in progress)
    assert progress[0]["completed"] == 0
    assert progress[-1]["completed"] == progress[-1]["total"] > 0

    parsed = [decode_line(line) for line in lines]
    assert isinstance(parsed[-1], QuantizeDone)
    assert all(isinstance(p, QuantizeProgress) for p in parsed[:-1])

    assert file_type_of(dst) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert dst.stat().st_size < f32_model.stat().st_size


@pytest.mark.parametrize(("qtype", "message"), [
    ("q5_K_M", "unsupported quantization type q5_K_M - supported types are "
               "F32, F16, Q4_K_S, Q4_K_M, Q8_0"),
])
def test_cli_reports_errors(f32_model: pathlib.Path, tmp_path: pathlib.Path, qtype: str,
                            message: str) -> None:
    dst = tmp_path / "out.gguf"
    rc, lines = run_cli(str(f32_model), str(dst), qtype)
    assert rc == 1
    assert [msgspec.json.decode(line) for line in lines] == [{"error": message}]
    failed = decode_line(lines[-1])
    assert isinstance(failed, QuantizeFailed) and failed.error == message
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_source(tmp_path: pathlib.Path) -> None:
    rc, lines = run_cli(str(tmp_path / "missing.gguf"), str(tmp_path / "out.gguf"), "q8_0")
    assert rc == 1
    assert len(lines) == 1
    assert "missing.gguf" in msgspec.json.decode(lines[0])["error"]


def test_cli_sigterm_removes_partial_output(tmp_path: pathlib.Path) -> None:
    # Big enough (~170 MB F32) that Q4_K_M takes seconds, so the signal lands mid-write.
    src = write_tiny_llama(tmp_path / "bigger.gguf", embedding_length=1024, block_count=4,
                           head_count=8)
    dst = tmp_path / "out.gguf"
    proc = subprocess.Popen([sys.executable, "-m", "herd.worker.quantize", str(src), str(dst),
                             "q4_K_M"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = decode_line(line)
            assert isinstance(msg, QuantizeProgress), msg
            if msg.completed > 0:  # llama.cpp is writing the partial file now
                break
        proc.terminate()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("the quantizer finished before the signal landed")
    assert proc.returncode == 128 + 15
    assert not dst.exists()
    assert leftovers(tmp_path) == []
