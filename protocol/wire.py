"""Internal messages between gateways, worker nodes and runners (ZeroMQ, msgpack).

Every message travels as two frames: a one-byte `Kind` so the receiver dispatches before
decoding, then the msgpack payload. Hot messages are array-like and untracked by the GC.
"""

from __future__ import annotations

import enum

import msgspec
from msgspec import Struct

WIRE_VERSION = 1


class FinishReason(enum.IntEnum):
    NONE = 0
    STOP = 1
    LENGTH = 2
    ABORT = 3
    ERROR = 4


class SamplingParams(Struct, array_like=True, omit_defaults=True, gc=False):
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    num_predict: int = -1
    num_keep: int = 4
    stop: list[str] = []
    format: str = ""  # "json" or a JSON schema's text: output constrained by a grammar
    # Speculative decoding, by the model's draft model when it has one, else by prompt lookup:
    # 0 = off; -1 = where the measured cost says it pays; N > 0 = up to N drafted tokens per
    # step. Where a request sets none the gateway sends 4 for a model with a draft (as Ollama),
    # -1 for sampling without a seed, else 0 (call.default_drafting says why).
    draft_num_predict: int = 0


class ChatTurn(Struct, array_like=True, omit_defaults=True, gc=False):
    """One chat message for the runner's template. Tool data travels as JSON text, so the
    runner hands it to Jinja as plain dicts and lists without knowing their schemas."""

    role: str
    content: str
    tool_calls: str = ""  # [{"id"?, "type": "function", "function": {"name", "arguments": {}}}]
    tool_name: str = ""  # role "tool": the tool whose result `content` is
    tool_call_id: str = ""  # role "tool": the call it answers
    thinking: str = ""  # role "assistant": the reasoning of an earlier answer
    images: list[bytes] = []  # image files (PNG, JPEG, WebP) placed as [img-N] in the prompt


class Submit(Struct, array_like=True, omit_defaults=True, gc=False):
    """One generation. Either `raw_prompt` (sent verbatim) or `messages` (templated in the runner)."""

    req_id: int
    sampling: SamplingParams
    raw_prompt: str | None = None
    messages: list[ChatTurn] = []
    context: list[int] = []
    return_context: bool = False
    truncate: bool = True
    template: str = ""  # a chat template (Jinja, or Ollama's Go syntax) replacing the model's own
    suffix: str = ""  # fill-in-the-middle: text after the insertion point (Go templates' .Suffix)
    logprobs: bool = False  # report each sampled token's log-probability
    top_logprobs: int = 0  # … and this many most likely alternatives
    render_only: bool = False  # answer with the rendered prompt, generate nothing
    think: str = ""  # "" (not asked), "true", "false" or a level ("low", "medium", "high", "max")
    split_thinking: bool = False  # a thinking model: its <think> block goes to `thinking`
    tools: str = ""  # the request's tool definitions as JSON: [{"type": "function", ...}]
    shift: bool = True  # at the context limit, drop old tokens and go on (else stop: "length")
    images: list[bytes] = []  # raw_prompt's images: at its [img-N] tags, else before it


class Abort(Struct, array_like=True, gc=False):
    req_id: int


class Embed(Struct, array_like=True, gc=False):
    """Embed every input in as few batched decodes as fit; vectors come back pooled, raw."""

    req_id: int
    inputs: list[str]
    truncate: bool = True


class Embeddings(Struct, array_like=True, omit_defaults=True, gc=False):
    req_id: int
    dim: int = 0
    vectors: bytes = b""  # float32 little-endian, len(inputs) × dim, not normalised
    prompt_tokens: int = 0
    error: str = ""
    error_status: int = 0


class Tokenize(Struct, array_like=True, omit_defaults=True, gc=False):
    """Text → the model's token ids, or with `detokenize` the ids in `tokens` → text."""

    req_id: int
    content: str = ""
    tokens: list[int] = []
    detokenize: bool = False


class Tokens(Struct, array_like=True, omit_defaults=True, gc=False):
    req_id: int
    tokens: list[int] = []
    content: str = ""
    error: str = ""
    error_status: int = 0


class Rerank(Struct, array_like=True, gc=False):
    """Score each document against the query with a rank-pooling model; answered with an
    `Embeddings` of width 1 (one relevance score per document, in order)."""

    req_id: int
    query: str
    documents: list[str]
    truncate: bool = True


class TokenLogprob(Struct, array_like=True, omit_defaults=True, gc=False):
    """A sampled token's log-probability under the model, and the likeliest alternatives."""

    token: str
    logprob: float
    bytes: list[int] = []
    top: list[TokenLogprob] = []


class RequestOutput(Struct, array_like=True, omit_defaults=True, gc=False):
    """New text of one request in one engine step; metrics ride on the final one."""

    req_id: int
    text: str = ""
    # A FinishReason value, decoded as a plain int: msgspec builds IntEnum members through the
    # enum's slow constructor, a tenth of a relaying gateway's CPU. IntEnum compares equal.
    finish: int = FinishReason.NONE
    prompt_tokens: int = 0
    prompt_ns: int = 0
    eval_tokens: int = 0
    eval_ns: int = 0
    context: list[int] | None = None
    error: str = ""
    error_status: int = 0
    logprobs: list[TokenLogprob] = []  # one per token sampled since the last output
    thinking: str = ""  # new reasoning text (thinking models)
    stop: str = ""  # on the final output: the stop string that ended the answer, if one did
    # On the final output: speculative tokens decoded for the request, and how many were kept.
    drafted_tokens: int = 0
    accepted_tokens: int = 0


class EngineStep(Struct, array_like=True, gc=False):
    """Everything one engine step produced for one gateway."""

    outputs: list[RequestOutput]


class RunnerSpec(Struct, omit_defaults=True):
    """What a node needs to start a runner. `key` identifies the loaded instance (a replica:
    the model's `model_key` plus where it was placed); runners with one model_key are replicas
    that answer alike. Weights are named by blob digest: the node finds them in its own store
    and refuses anything else."""

    key: str
    model_digest: str  # "sha256:<hex>", the GGUF blob in the node's OLLAMA_MODELS
    num_ctx: int
    num_parallel: int
    num_batch: int = 512
    num_threads: int = 0
    num_gpu_layers: int = -1
    use_mmap: bool = True
    family: str = ""
    adapter_digests: list[str] = []  # LoRA GGUF blobs applied to every context of this runner
    kv_cache_type: str = "f16"  # f16, q8_0 or q4_0 (OLLAMA_KV_CACHE_TYPE)
    flash_attention: str = "auto"  # auto, on or off (OLLAMA_FLASH_ATTENTION)
    model_key: str = ""  # the model and its load-time options, without the placement
    devices: list[str] = []  # where the placement put it: ["cuda:0"], ["cuda:0", "cuda:1"], ["cpu"]
    device_memory: list[int] = []  # the estimate's bytes on each of those devices
    tensor_split: list[float] = []  # layer proportions across several GPUs
    main_gpu: int = 0  # index into devices
    projector_digest: str = ""  # a vision projector GGUF (mmproj) blob loaded beside the model
    draft_digest: str = ""  # a smaller GGUF of the same vocabulary that drafts for speculation


class DeviceInfo(Struct, omit_defaults=True):
    """One device of a node and its memory. `free` is what models may still take: what the
    driver (NVML) or the OS reports — for devices described by HERD_DEVICES (simulated), total
    less what runners hold — less `reserved`, the node's OLLAMA_GPU_OVERHEAD on each GPU."""

    id: str  # "cuda:0", "cpu"
    total: int
    free: int
    name: str = ""
    simulated: bool = False
    reserved: int = 0

    @property
    def is_gpu(self) -> bool:
        return not self.id.startswith("cpu")


class RunnerInfo(Struct, omit_defaults=True):
    """A runner a node holds, whoever loaded it: what every gateway's placement must count."""

    key: str
    model_key: str
    endpoint: str
    devices: list[str] = []
    device_memory: list[int] = []


class Ping(Struct, array_like=True):
    """Gateway → runner while requests are in flight; a runner that stops answering between
    engine steps is hung (stuck in native code, say) and is treated as dead."""

    nonce: int


class Pong(Struct, array_like=True):
    nonce: int


class Hello(Struct, omit_defaults=True):
    """Gateway → node, once a second: a heartbeat the node answers with NodeInfo. It renews the
    gateway's leases on the runners named in `keys`; a gateway silent for longer than the
    node's lease timeout loses them all (a restarted gateway leaves nothing running)."""

    version: int = WIRE_VERSION
    keys: list[str] = []


class NodeInfo(Struct, omit_defaults=True):
    """The node's answer to Hello; a new node_id means the node restarted and its runners died.
    It carries the node's devices and every runner it holds, so each gateway places models
    knowing what the others loaded. `draining`: it is shutting down (SIGTERM), takes no new
    runners and its runners finish what they have; sent unasked when draining starts."""

    node_id: str
    devices: list[DeviceInfo] = []
    runners: list[RunnerInfo] = []
    draining: bool = False


class LoadModel(Struct):
    request_id: int
    spec: RunnerSpec


class ModelLoaded(Struct):
    request_id: int
    key: str
    endpoint: str
    size: int
    size_vram: int
    context_length: int


class LoadFailed(Struct):
    request_id: int
    key: str
    error: str


class UnloadModel(Struct):
    key: str


class RunnerExited(Struct):
    key: str
    endpoint: str
    returncode: int


class RunnerReady(Struct):
    key: str
    endpoint: str
    size: int
    size_vram: int
    context_length: int


class RunnerFailed(Struct):
    key: str
    error: str


class Kind(enum.IntEnum):
    SUBMIT = 1
    ABORT = 2
    ENGINE_STEP = 3
    EMBED = 4
    EMBEDDINGS = 5
    TOKENIZE = 6
    TOKENS = 7
    RERANK = 8
    HELLO = 10
    LOAD_MODEL = 11
    MODEL_LOADED = 12
    LOAD_FAILED = 13
    UNLOAD_MODEL = 14
    RUNNER_EXITED = 15
    RUNNER_READY = 16
    RUNNER_FAILED = 17
    NODE_INFO = 18
    PING = 19
    PONG = 20


_TYPES: dict[Kind, type[Struct]] = {
    Kind.SUBMIT: Submit,
    Kind.ABORT: Abort,
    Kind.ENGINE_STEP: EngineStep,
    Kind.EMBED: Embed,
    Kind.EMBEDDINGS: Embeddings,
    Kind.TOKENIZE: Tokenize,
    Kind.TOKENS: Tokens,
    Kind.RERANK: Rerank,
    Kind.HELLO: Hello,
    Kind.LOAD_MODEL: LoadModel,
    Kind.MODEL_LOADED: ModelLoaded,
    Kind.LOAD_FAILED: LoadFailed,
    Kind.UNLOAD_MODEL: UnloadModel,
    Kind.RUNNER_EXITED: RunnerExited,
    Kind.RUNNER_READY: RunnerReady,
    Kind.RUNNER_FAILED: RunnerFailed,
    Kind.NODE_INFO: NodeInfo,
    Kind.PING: Ping,
    Kind.PONG: Pong,
}
_KIND_FRAMES: dict[type[Struct], bytes] = {t: bytes([k]) for k, t in _TYPES.items()}

WireMessage = (Submit | Abort | EngineStep | Embed | Embeddings | Tokenize | Tokens | Rerank | Hello
               | LoadModel | ModelLoaded | LoadFailed | UnloadModel | RunnerExited | RunnerReady
               | RunnerFailed | NodeInfo | Ping | Pong)


class WireCodec:
    """One reusable encoder and one decoder per kind; create one per socket owner."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders = {bytes([k]): msgspec.msgpack.Decoder(t) for k, t in _TYPES.items()}

    def encode(self, message: WireMessage) -> list[bytes]:
        return [_KIND_FRAMES[type(message)], self._encoder.encode(message)]

    def decode(self, kind: bytes, payload: bytes) -> WireMessage:
        decoder = self._decoders.get(kind)
        if decoder is None:
            raise ValueError(f"unknown wire message kind {kind!r}")
        return decoder.decode(payload)
