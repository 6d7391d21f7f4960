"""protocol/wire.py: every internal message survives WireCodec's two-frame encoding."""

from __future__ import annotations

import msgspec
import pytest

from herd.protocol.wire import (
    WIRE_VERSION,
    Abort,
    Embed,
    Embeddings,
    Rerank,
    Tokenize,
    Tokens,
    ChatTurn,
    EngineStep,
    FinishReason,
    DeviceInfo,
    Hello,
    NodeInfo,
    Ping,
    Pong,
    RunnerInfo,
    Kind,
    LoadFailed,
    LoadModel,
    ModelLoaded,
    RequestOutput,
    RunnerExited,
    RunnerFailed,
    RunnerReady,
    RunnerSpec,
    SamplingParams,
    Submit,
    UnloadModel,
    WireCodec,
    WireMessage,
)

SPEC = RunnerSpec(key="gemma3:270m#1", model_digest="sha256:" + "ab" * 32, num_ctx=8192,
                  num_parallel=4, num_batch=256, num_threads=2, num_gpu_layers=0,
                  use_mmap=False, family="gemma3")

ONE_OF_EACH: list[tuple[Kind, WireMessage]] = [
    (Kind.SUBMIT, Submit(
        req_id=7,
        sampling=SamplingParams(temperature=0.0, top_k=1, seed=42, num_predict=16,
                                stop=["</s>", "\n\n"]),
        messages=[ChatTurn("system", "Be brief."), ChatTurn("user", "Héllo 😀")],
        context=[1, 2, 3],
        return_context=True,
        truncate=False,
    )),
    (Kind.SUBMIT, Submit(req_id=8, sampling=SamplingParams(), raw_prompt="raw <b>prompt</b>")),
    (Kind.SUBMIT, Submit(req_id=9, sampling=SamplingParams(),
                         tools='[{"type":"function","function":{"name":"w"}}]', messages=[
        ChatTurn("user", "Weather?"),
        ChatTurn("assistant", "", tool_calls='[{"type":"function","function":{"name":"w","arguments":{}}}]'),
        ChatTurn("tool", "sunny", tool_name="w", tool_call_id="call_ab12cd34"),
    ])),
    (Kind.ABORT, Abort(req_id=7)),
    (Kind.ENGINE_STEP, EngineStep(outputs=[
        RequestOutput(req_id=7, text="Hi"),
        RequestOutput(req_id=8, text="", finish=FinishReason.STOP, prompt_tokens=12,
                      prompt_ns=3_000_000, eval_tokens=5, eval_ns=9_000_000, context=[4, 5]),
        RequestOutput(req_id=9, finish=FinishReason.ERROR, error="boom", error_status=500),
    ])),
    (Kind.EMBED, Embed(req_id=3, inputs=["a", "b"], truncate=False)),
    (Kind.EMBEDDINGS, Embeddings(req_id=3, dim=2, vectors=b"\x00" * 16, prompt_tokens=4)),
    (Kind.TOKENIZE, Tokenize(req_id=4, content="hi <s>")),
    (Kind.TOKENIZE, Tokenize(req_id=5, tokens=[1, 2], detokenize=True)),
    (Kind.TOKENS, Tokens(req_id=5, tokens=[1, 2], content="hi")),
    (Kind.TOKENS, Tokens(req_id=6, error="invalid token id 9", error_status=400)),
    (Kind.RERANK, Rerank(req_id=7, query="q", documents=["a", "b"], truncate=False)),
    (Kind.HELLO, Hello()),
    (Kind.NODE_INFO, NodeInfo(node_id="0a1b2c3d4e5f6789")),
    (Kind.NODE_INFO, NodeInfo("0a1b", [DeviceInfo("cuda:0", 6 << 30, 5 << 30, simulated=True)],
                              [RunnerInfo("m@n/cuda:0", "m", "tcp://h:1", ["cuda:0"], [1 << 30])])),
    (Kind.PING, Ping(7)),
    (Kind.PONG, Pong(7)),
    (Kind.LOAD_MODEL, LoadModel(request_id=1, spec=SPEC)),
    (Kind.MODEL_LOADED, ModelLoaded(request_id=1, key=SPEC.key, endpoint="tcp://127.0.0.1:5001",
                                    size=300_000_000, size_vram=0, context_length=8192)),
    (Kind.LOAD_FAILED, LoadFailed(request_id=2, key="bad#1", error="unable to load model")),
    (Kind.UNLOAD_MODEL, UnloadModel(key=SPEC.key)),
    (Kind.RUNNER_EXITED, RunnerExited(key=SPEC.key, endpoint="ipc:///tmp/r1", returncode=-9)),
    (Kind.RUNNER_READY, RunnerReady(key=SPEC.key, endpoint="ipc:///tmp/r1", size=1, size_vram=1,
                                    context_length=2048)),
    (Kind.RUNNER_FAILED, RunnerFailed(key=SPEC.key, error="out of memory")),
]


def test_every_kind_is_covered_by_the_examples() -> None:
    assert {kind for kind, _ in ONE_OF_EACH} == set(Kind)


@pytest.mark.parametrize(("kind", "message"), ONE_OF_EACH,
                         ids=[f"{k.name}-{i}" for i, (k, _) in enumerate(ONE_OF_EACH)])
def test_message_round_trips(kind: Kind, message: WireMessage) -> None:
    codec = WireCodec()
    frames = codec.encode(message)
    assert len(frames) == 2
    decoded = codec.decode(*frames)
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize(("kind", "message"), ONE_OF_EACH,
                         ids=[f"{k.name}-{i}" for i, (k, _) in enumerate(ONE_OF_EACH)])
def test_first_frame_is_the_one_byte_kind(kind: Kind, message: WireMessage) -> None:
    kind_frame, _ = WireCodec().encode(message)
    assert kind_frame == bytes([kind])
    assert len(kind_frame) == 1
    assert kind_frame[0] == kind.value


def test_a_different_codec_instance_decodes_what_another_encoded() -> None:
    message = Abort(req_id=123)
    assert WireCodec().decode(*WireCodec().encode(message)) == message


def test_finish_reason_round_trips_as_a_plain_int_equal_to_the_enum() -> None:
    step = EngineStep(outputs=[RequestOutput(req_id=1, finish=FinishReason.LENGTH)])
    codec = WireCodec()
    decoded = codec.decode(*codec.encode(step))
    assert isinstance(decoded, EngineStep)
    finish = decoded.outputs[0].finish
    assert type(finish) is int and finish == FinishReason.LENGTH
    assert {FinishReason.LENGTH: "length"}[finish] == "length"


def test_hello_carries_the_wire_version() -> None:
    codec = WireCodec()
    decoded = codec.decode(*codec.encode(Hello()))
    assert isinstance(decoded, Hello)
    assert decoded.version == WIRE_VERSION


@pytest.mark.parametrize("kind", [b"\x00", b"\x09", b"\xff", b"", b"\x01\x01"])
def test_an_unknown_kind_raises_value_error(kind: bytes) -> None:
    with pytest.raises(ValueError, match="unknown wire message kind"):
        WireCodec().decode(kind, msgspec.msgpack.encode([1]))


def test_a_payload_of_the_wrong_shape_is_rejected() -> None:
    codec = WireCodec()
    _, payload = codec.encode(RunnerFailed(key="k", error="e"))
    with pytest.raises(msgspec.ValidationError):
        codec.decode(bytes([Kind.ABORT]), payload)


def test_an_engine_step_with_64_outputs_round_trips() -> None:
    step = EngineStep(outputs=[
        RequestOutput(req_id=i, text=f"tok{i} ✓",
                      finish=FinishReason.STOP if i % 8 == 0 else FinishReason.NONE,
                      eval_tokens=i)
        for i in range(64)
    ])
    codec = WireCodec()
    kind_frame, payload = codec.encode(step)
    assert kind_frame == bytes([Kind.ENGINE_STEP])
    decoded = codec.decode(kind_frame, payload)
    assert decoded == step
    assert isinstance(decoded, EngineStep)
    assert [o.req_id for o in decoded.outputs] == list(range(64))
