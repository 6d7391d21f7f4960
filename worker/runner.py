"""The runner process: one loaded model, one llama.cpp context, one batching engine.

It binds a ROUTER socket that gateways connect to (CURVE-authenticated like its node's when the
node has keys), tells its node when it is ready (or why it failed to load), and otherwise loops:
drain every waiting message, run one engine step. SIGTERM: new requests are refused, the running
ones finish, then it exits.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
import os
import signal
import sys
import time
import traceback

import llama_cpp as L
import zmq

from herd.protocol.curve import ServerKeys
from herd.protocol.wire import (Abort, Embed, Embeddings, EngineStep, FinishReason, Ping, Pong,
                                RequestOutput, Rerank, RunnerFailed, RunnerReady, RunnerSpec,
                                Submit, Tokenize, Tokens, WireCodec)
from herd.worker.cpu_share import CpuShare
from herd.worker.templates.jinja import ChatTemplate, TemplateError
from herd.worker.engine.embedder import Embedder, coalesce
from herd.worker.engine.reranker import rerank
from herd.worker.engine.batch import BatchEngine, RequestError
from herd.worker.engine.llama import LlamaContext, LlamaModel, LoraAdapter
from herd.worker.engine.vision.mmproj import cache_dir, with_projector_type
from herd.worker.engine.vision.projector import Projector, ProjectorError
from herd.worker.engine.drafting.draft_model import load_draft

_IDLE_POLL_MS = 500
log = logging.getLogger("herd.runner")


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def is_embedding_model(model: LlamaModel) -> bool:
    arch = model.meta("general.architecture") or ""
    return model.meta(f"{arch}.pooling_type") is not None


def context_length(spec: RunnerSpec, model: LlamaModel) -> int:
    n_ctx = min(spec.num_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else spec.num_ctx
    return max(n_ctx, 16)


def thread_count(spec: RunnerSpec) -> int:
    """llama.cpp's own default is 4 threads whatever the machine: on 2 cores that halves the
    decode speed. Default to the CPUs this process may run on."""
    return spec.num_threads if spec.num_threads > 0 else len(os.sched_getaffinity(0))


def computes_on_host(spec: RunnerSpec, model: LlamaModel) -> bool:
    """Whether some of its layers compute on the host's cores (all of them without a GPU)."""
    if not L.llama_supports_gpu_offload() or spec.num_gpu_layers == 0 or "cpu" in spec.devices:
        return True
    return 0 < spec.num_gpu_layers <= L.llama_model_n_layer(model.ptr)


def device_sampling(spec: RunnerSpec, environ: Mapping[str, str] = os.environ) -> bool:
    """HERD_DEVICE_SAMPLING=on|off|auto (default): sample inside the decode graph. Auto turns it on
    where layers live on a GPU; it is a property of the worker's host, hence the runner's env."""
    choice = environ.get("HERD_DEVICE_SAMPLING", "auto").strip().lower()
    if choice in ("1", "on", "true", "yes"):
        return True
    if choice in ("0", "off", "false", "no"):
        return False
    return bool(L.llama_supports_gpu_offload()) and spec.num_gpu_layers != 0


def model_template(model: LlamaModel, family: str) -> ChatTemplate:
    """The GGUF's chat template, or the family's built-in one when the GGUF's cannot be used:
    a model whose template fails to compile would otherwise fail every load, for ever."""
    tokens = {"bos_token": model.token_text(model.bos), "eos_token": model.token_text(model.eos)}
    try:
        return ChatTemplate.for_model(model.meta("tokenizer.chat_template"), family, **tokens)
    except TemplateError as e:
        log.warning("the model's chat template is unusable (%s): using the %r built-in one",
                    e, family)
        return ChatTemplate.for_model(None, family, **tokens)


def load_engine(spec: RunnerSpec, emit, model: LlamaModel | str,
                adapters: list[LoraAdapter] | None = None,
                projector_path: str = "", draft_path: str = "") -> tuple[LlamaModel, BatchEngine]:
    """`model`: a loaded model, or the path of its GGUF (tests, benchmarks); `projector_path`:
    its vision projector's GGUF, `draft_path` its draft model's, "" without one."""
    if isinstance(model, str):
        model = LlamaModel(model, n_gpu_layers=spec.num_gpu_layers)
    n_ctx = context_length(spec, model)
    ctx = LlamaContext(model, n_ctx_seq=n_ctx, n_seq=max(spec.num_parallel, 1),
                       n_batch=spec.num_batch, n_threads=thread_count(spec),
                       kv_cache_type=spec.kv_cache_type, flash_attention=spec.flash_attention)
    ctx.apply_adapters(adapters or [])
    family = spec.family or (model.meta("general.architecture") or "")
    template = model_template(model, family)
    try:
        projector = load_projector(spec, model, projector_path)
        refusal = ""
    except ProjectorError as e:
        # The text model still serves; image requests get the reason (M-RoPE models, e.g.).
        log.warning("vision disabled: %s", e)
        projector, refusal = None, str(e)
    drafter = load_draft(draft_path, model, n_ctx_seq=ctx.n_ctx_seq, n_seq=ctx.n_seq,
                         n_batch=spec.num_batch, n_threads=thread_count(spec),
                         n_gpu_layers=spec.num_gpu_layers, kv_cache_type=spec.kv_cache_type,
                         flash_attention=spec.flash_attention) if draft_path else None
    engine = BatchEngine(model, ctx, template, emit, device_sampling=device_sampling(spec),
                         projector=projector, drafter=drafter, num_gpu_layers=spec.num_gpu_layers)
    if refusal:
        engine.vision_refusal = refusal
    return model, engine


def load_projector(spec: RunnerSpec, model: LlamaModel, path: str) -> Projector | None:
    """The model's vision projector, if its manifest has one; an old llava projector without
    clip.projector_type is read through a patched copy (Ollama patches it at create)."""
    if not path:
        return None
    path = with_projector_type(path, cache_dir())
    # The encoder runs beside the step loop's own decode threads: half the cores each. ggml's
    # spinning thread pools oversubscribed measured 30x slower here (a 256-patch encode: 1.1 s
    # on 2 threads beside the decoder, 35 ms on 1; bench/RESULTS.md).
    return Projector(model, path, n_threads=max(1, thread_count(spec) // 2),
                     use_gpu=bool(L.llama_supports_gpu_offload()) and spec.num_gpu_layers != 0,
                     flash_attention=spec.flash_attention)


class Runner:
    def __init__(self, spec: RunnerSpec, bind: str, node_events: str, model_path: str,
                 adapter_paths: list[str], keys: ServerKeys | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024, projector_path: str = "",
                 draft_path: str = "", cpu_board: str = "", cpu_slot: int = -1) -> None:
        self.spec = spec
        self.model_path = model_path
        self.adapter_paths = adapter_paths
        self.projector_path = projector_path
        self.draft_path = draft_path
        self.stopping = False
        self.codec = WireCodec()
        self.zctx = zmq.Context.instance()
        self.events = self.zctx.socket(zmq.PUSH)
        self.events.setsockopt(zmq.LINGER, 2000)
        self.events.connect(node_events)
        self.sock = self.zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A ROUTER drops messages for a peer whose queue is full: a gateway stalled for a few
        # seconds would silently lose text. No high-water mark: a slow gateway costs memory.
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if keys is not None:
            self._auth = keys.start_authenticator(self.zctx, asyncio=False)
            keys.apply(self.sock)
        self.bind = bind
        self.parent = os.getppid()
        self.model: LlamaModel | None = None
        self.embedder: Embedder | None = None
        # Embed requests read in one drain of the socket, answered after it (_embed_waiting):
        # concurrent small requests then share decodes instead of queueing one by one.
        self.embeds: list[tuple[bytes, Embed]] = []
        self.adapters: list[LoraAdapter] = []
        self.cpu_board, self.cpu_slot = cpu_board, cpu_slot
        self.cpu: CpuShare | None = None  # the node's board, if this runner computes on the host
        self.threads = thread_count(spec)

    def _emit(self, client: bytes, outputs: list[RequestOutput]) -> None:
        self.sock.send_multipart([client, *self.codec.encode(EngineStep(outputs))])

    def run(self) -> int:
        try:
            self.model = LlamaModel(self.model_path, n_gpu_layers=self.spec.num_gpu_layers,
                                    tensor_split=self.spec.tensor_split,
                                    main_gpu=self.spec.main_gpu)
            self.adapters = [LoraAdapter(self.model, path) for path in self.adapter_paths]
            # Embedding-only models (BERT) cannot generate: they get no generation context.
            engine = None if is_embedding_model(self.model) else load_engine(
                self.spec, self._emit, self.model, self.adapters, self.projector_path,
                self.draft_path)[1]
            self.sock.bind(self.bind)
        except Exception as e:  # report load failures to the node, which answers the gateway
            traceback.print_exc()
            self.events.send_multipart(self.codec.encode(RunnerFailed(self.spec.key, str(e))))
            return 1
        if self.cpu_board and self.cpu_slot >= 0 and computes_on_host(self.spec, self.model):
            try:
                self.cpu = CpuShare(self.cpu_board, self.cpu_slot,
                                    cores=len(os.sched_getaffinity(0)), cap=self.threads)
            except OSError as e:  # it serves all the same, only without sharing the cores
                log.warning("no CPU board (%s): this runner keeps %d threads", e, self.threads)
        endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.events.send_multipart(self.codec.encode(RunnerReady(
            self.spec.key, endpoint, size=_resident_bytes(), size_vram=0,
            context_length=context_length(self.spec, self.model))))
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        next_parent_check = 0.0
        while True:
            busy = engine is not None and engine.has_work
            if not busy:
                self._share_cores(engine, False)  # before waiting: the others get the cores
            timeout = 0 if busy else _IDLE_POLL_MS
            while poller.poll(timeout):
                self._handle(engine, self.sock.recv_multipart(zmq.NOBLOCK))
                timeout = 0
            self._share_cores(engine, bool(self.embeds) or (engine is not None and engine.has_work))
            if self.embeds:
                self._embed_waiting()
            if self.stopping and (engine is None or not engine.has_work):
                # SIGTERM, and every sequence has finished. Closing with linger: the last
                # step's text must still reach the gateways.
                self.sock.setsockopt(zmq.LINGER, 5000)
                self.sock.close()
                return 0
            now = time.monotonic()
            if now >= next_parent_check:
                next_parent_check = now + 1.0
                if os.getppid() != self.parent:
                    return 0  # the node is gone (even mid-answer): nobody owns us any more
            if engine is None or not engine.has_work:
                continue
            engine.step()

    def _share_cores(self, engine: BatchEngine | None, working: bool) -> None:
        """Marks this runner on the node's board and, while it works, takes its share of the
        cores among the runners working at the same moment (cpu_share.py)."""
        if self.cpu is None:
            return
        threads = self.cpu.update(working)
        if not working or threads == self.threads:
            return
        self.threads = threads
        contexts = [engine.ctx.ptr] if engine is not None else []
        if engine is not None and engine.drafter is not None:
            contexts.append(engine.drafter.ctx.ptr)
        if self.embedder is not None:
            contexts.append(self.embedder.ctx)
        for ctx in contexts:
            L.llama_set_n_threads(ctx, threads, threads)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = Embedder(self.model, max_tokens=context_length(self.spec, self.model),
                                     n_threads=self.threads, adapters=self.adapters)
        return self.embedder

    def _embed_waiting(self) -> None:
        waiting, self.embeds = self.embeds, []
        for run in coalesce([len(m.inputs) for _, m in waiting]):
            group = [waiting[i] for i in run]
            try:
                results = self._embedder().embed_many([(m.inputs, m.truncate) for _, m in group])
            except Exception as e:  # context creation or a decode: the whole group fails
                if not isinstance(e, RequestError):
                    log.exception("embed %s failed", [m.req_id for _, m in group])
                results = [e] * len(group)
            for (client, message), result in zip(group, results):
                self._reply_pooled(client, message, result)

    def _rerank(self, client: bytes, message: Rerank) -> None:
        try:
            result: tuple | Exception = rerank(self._embedder(), message.query, message.documents,
                                               truncate=message.truncate)
        except Exception as e:
            if not isinstance(e, RequestError):
                log.exception("rerank %d failed", message.req_id)
            result = e
        self._reply_pooled(client, message, result)

    def _reply_pooled(self, client: bytes, message: Embed | Rerank,
                      result: tuple | Exception) -> None:
        if isinstance(result, RequestError):
            reply = Embeddings(message.req_id, error=str(result), error_status=result.status)
        elif isinstance(result, Exception):  # a bug of ours fails this request, not the runner
            reply = Embeddings(message.req_id, error=f"internal error: {type(result).__name__}: "
                               f"{result}", error_status=500)
        else:
            vectors, tokens = result
            reply = Embeddings(message.req_id, dim=vectors.shape[1], vectors=vectors.tobytes(),
                               prompt_tokens=tokens)
        self.sock.send_multipart([client, *self.codec.encode(reply)])

    def _tokenize(self, client: bytes, message: Tokenize) -> None:
        """llama.cpp server's /tokenize and /detokenize: no BOS/EOS added, special tokens
        written in the text are parsed as such, and ids come back as the text they stand for."""
        model = self.model
        assert model is not None
        try:
            if not message.detokenize:
                reply = Tokens(message.req_id, tokens=model.tokenize(
                    message.content, add_special=False, parse_special=True))
            elif bad := [t for t in message.tokens if not 0 <= t < model.n_vocab]:
                # llama.cpp reads out of bounds on an unknown id: refuse it here.
                reply = Tokens(message.req_id, error=f"invalid token id {bad[0]} "
                               f"(the vocabulary has {model.n_vocab})", error_status=400)
            else:
                reply = Tokens(message.req_id, content=model.text_of(message.tokens))
        except Exception as e:  # a bug of ours fails this request, not every one on the runner
            log.exception("tokenize %d failed", message.req_id)
            reply = Tokens(message.req_id, error=f"internal error: {type(e).__name__}: {e}",
                           error_status=500)
        self.sock.send_multipart([client, *self.codec.encode(reply)])

    def _handle(self, engine: BatchEngine | None, frames: list[bytes]) -> None:
        if len(frames) != 3:
            return
        client, kind, payload = frames
        try:
            message = self.codec.decode(kind, payload)
        except Exception:
            traceback.print_exc()
            return
        if isinstance(message, Ping):
            self.sock.send_multipart([client, *self.codec.encode(Pong(message.nonce))])
        elif isinstance(message, Embed):
            self.embeds.append((client, message))
        elif isinstance(message, Rerank):
            self._rerank(client, message)
        elif isinstance(message, Tokenize):
            self._tokenize(client, message)
        elif engine is None:
            if isinstance(message, Submit):
                self._emit(client, [RequestOutput(message.req_id, finish=FinishReason.ERROR,
                                                  error="this model does not support generate",
                                                  error_status=400)])
        elif isinstance(message, Submit) and self.stopping:
            self._emit(client, [RequestOutput(message.req_id, finish=FinishReason.ERROR,
                                              error="model runner is shutting down",
                                              error_status=503)])
        elif isinstance(message, Submit):
            engine.submit(client, message)
            engine.flush()
        elif isinstance(message, Abort):
            engine.abort(client, message.req_id)
            engine.flush()


def main(argv: list[str] | None = None) -> int:
    import msgspec

    parser = argparse.ArgumentParser(prog="herd-runner")
    parser.add_argument("--spec", required=True, help="RunnerSpec as JSON")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--events", required=True, help="the node's PULL endpoint")
    parser.add_argument("--model", required=True, help="the GGUF the node resolved from the digest")
    parser.add_argument("--adapter", action="append", default=[])
    parser.add_argument("--projector", default="", help="the vision projector's GGUF, resolved too")
    parser.add_argument("--draft", default="", help="the draft model's GGUF, resolved too")
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--cpu-board", default="", help="the node's board of busy runners")
    parser.add_argument("--cpu-slot", type=int, default=-1, help="this runner's byte on it")
    parser.add_argument("--curve-secret-key", default="")
    parser.add_argument("--curve-authorized", default="")
    args = parser.parse_args(argv)
    spec = msgspec.json.decode(args.spec, type=RunnerSpec)
    keys = ServerKeys.load(args.curve_secret_key, args.curve_authorized)
    runner = Runner(spec, args.bind, args.events, args.model, args.adapter, keys,
                    args.max_message_bytes, args.projector, args.draft, args.cpu_board,
                    args.cpu_slot)

    def stop(*_: object) -> None:
        runner.stopping = True  # the loop polls at least every _IDLE_POLL_MS

    signal.signal(signal.SIGTERM, stop)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
