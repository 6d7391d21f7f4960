"""Continuous batching: every step mixes prefill chunks and one decode token per running sequence
into one llama_batch, calls llama_decode once, samples each sequence with its own C chain."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

import llama_cpp as L

from herd.protocol.wire import FinishReason, RequestOutput, Submit
from herd.worker.templates.jinja import ChatTemplate, TemplateError
from herd.worker.engine.llama import LlamaContext, LlamaModel
from herd.worker.engine.logprobs import token_logprob
from herd.worker.engine.prompt import PromptBuilder, RequestError
from herd.worker.engine import shaping
from herd.worker.engine.drafting import speculative
from herd.worker.engine.drafting.draft_model import DraftModel
from herd.worker.engine.sampler import InvalidFormat, SamplerChain, after_thinking_chains
from herd.worker.engine.sequence import Sequence, Slot, pick_slot, shift_context
from herd.worker.engine.textstream import TextStream
from herd.worker.engine.thinking import OPEN as THINK_OPEN, ThinkingSplitter, may_open
from herd.worker.engine.vision.projector import Projector
from herd.worker.engine.vision.prompt import has_images
from herd.worker.engine.vision.requests import ImageRequests
from herd.worker.engine.vision.step import reuse_boundary, text_end

log = logging.getLogger("herd.runner")

Emit = Callable[[bytes, list[RequestOutput]], None]

# A negative num_predict (but -2) is "unlimited" and the context shifts forever; a model that
# never says EOS would then never answer a non-streaming request. Herd stops it after this many
# contexts.
UNLIMITED_CAP_CONTEXTS = 8


class BatchEngine(ImageRequests):
    def __init__(self, model: LlamaModel, ctx: LlamaContext, template: ChatTemplate,
                 emit: Emit, *, device_sampling: bool = False,
                 projector: Projector | None = None, drafter: DraftModel | None = None,
                 num_gpu_layers: int = -1) -> None:
        self.model = model
        self.drafter = drafter  # the model's draft model: speculation drafts with it
        # Sampling in the decode graph: on a GPU it spares copying 262k logits per sequence to
        # the host and sampling them there; on a CPU it measured slower (bench/RESULTS.md).
        self.device_sampling = device_sampling
        self.ctx = ctx
        self.prompts = PromptBuilder(model, template, ctx.n_ctx_seq)
        self._emit = emit
        self._slots = [Slot(i) for i in range(ctx.n_seq)]
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._by_key: dict[tuple[bytes, int], Sequence] = {}
        self._outbox: dict[bytes, list[RequestOutput]] = {}
        self._batch = L.llama_batch_init(ctx.n_batch, 0, 1)
        self._shaper = shaping.Shaper(model, self._slots, ctx.n_ctx_seq, num_gpu_layers)
        self._init_vision(projector)

    def close(self) -> None:
        for seq in list(self._by_key.values()):
            self._detach(seq)
            seq.chain.close()
            if seq.grammar is not None:
                seq.grammar.close()
        L.llama_batch_free(self._batch)
        self._close_vision()
        if self.drafter is not None:
            self.drafter.close()

    # -- requests ---------------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting or self._encoding)

    def submit(self, client: bytes, req: Submit) -> None:
        """Queues a request, or answers it at once: with its prompt (render_only) or with why it
        cannot run. Whatever the request carries (a template, a schema, options) fails that
        request alone: the runner is shared by every stream on the model."""
        try:
            if has_images(req):  # prepared on the projector's thread first
                self._submit_images(client, req)
                return
            seq = self._sequence(client, req)
        except (RequestError, InvalidFormat, TemplateError) as e:
            self._refuse(client, req, str(e), getattr(e, "status", 400))
            return
        except RecursionError:
            self._refuse(client, req, "the request is nested too deeply", 400)
            return
        except Exception as e:  # a bug of ours, not the request's: a 500, and the runner lives
            log.exception("submit %d failed", req.req_id)
            self._refuse(client, req, f"internal error: {type(e).__name__}: {e}", 500)
            return
        if seq is None:
            return
        self._by_key[(client, req.req_id)] = seq
        self._waiting.append(seq)

    def _sequence(self, client: bytes, req: Submit) -> Sequence | None:
        prompt = self.prompts.build(req)
        if req.render_only:
            self._out(client, RequestOutput(req.req_id, prompt.text, FinishReason.STOP))
            return None
        chain, grammar = self._chains(req)
        try:
            stream = TextStream(req.sampling.stop)
        except BaseException:
            chain.close()
            if grammar is not None:
                grammar.close()
            raise
        seq = Sequence(client=client, req=req, prompt=prompt.tokens, stream=stream, chain=chain,
                       t_submit=time.perf_counter_ns(), grammar=grammar)
        if req.split_thinking:
            seq.thinker = ThinkingSplitter(
                opened_by_prompt=prompt.text.rstrip().endswith(THINK_OPEN))
        return seq

    def _refuse(self, client: bytes, req: Submit, error: str, status: int) -> None:
        self._out(client, RequestOutput(req.req_id, finish=FinishReason.ERROR, error=error,
                                        error_status=status))

    def _chains(self, req: Submit) -> tuple[SamplerChain, SamplerChain | None]:
        # Newest Ollama constrains a thinking model's output only once its reasoning is over
        # (server/routes.go, ChatHandler's structuredOutputsState: a first request without the
        # format, re-issued with it when content starts); here the runner swaps chains instead.
        defer = bool(req.sampling.format) and req.split_thinking and req.think != "false"
        kwargs = dict(n_vocab=self.model.n_vocab, n_ctx=self.ctx.n_ctx_seq, vocab=self.model.vocab)
        if defer:
            return after_thinking_chains(req.sampling, **kwargs)
        return SamplerChain(req.sampling, **kwargs), None

    def abort(self, client: bytes, req_id: int) -> None:
        seq = self._by_key.get((client, req_id))
        if seq is None:
            return
        if seq in self._encoding:
            self._encoding.remove(seq)
            seq.encoding.cancel()
            seq.encoding = None
        if seq in self._waiting:
            self._waiting.remove(seq)
        self._finish(seq, FinishReason.ABORT)

    def abort_client(self, client: bytes) -> None:
        for (owner, req_id) in [k for k in self._by_key if k[0] == client]:
            self.abort(owner, req_id)

    # -- one engine step ------------------------------------------------------------------

    def step(self) -> None:
        if self._encoding:
            self._collect_encoded()
        self._admit()
        if self._running:
            self._decode_and_sample()
            if self._images is not None:
                self._decode_images()
        self.flush()

    def flush(self) -> None:
        if self._outbox:
            outbox, self._outbox = self._outbox, {}
            for client, outputs in outbox.items():
                self._emit(client, outputs)

    def _admit(self) -> None:
        while self._waiting:
            free = [s for s in self._slots if not s.busy]
            if not free:
                return
            seq = self._waiting.popleft()
            shared, slot = pick_slot(self._slots, free, seq.prompt)
            # At least the last prompt token is decoded again: its logits start the answer.
            reuse = min(shared, len(seq.prompt) - 1)
            if seq.spans:
                reuse = reuse_boundary(seq.prompt, reuse)
            if reuse < len(slot.tokens):
                del slot.tokens[self.ctx.forget(slot.seq_id, reuse):]
            slot.busy = True
            seq.slot = slot
            # Decoding the last prompt token on its own, whether the prefix came from the cache
            # or was just computed, keeps greedy and seeded answers identical across requests.
            seq.next_token = seq.prompt[-1]
            seq.t_admit = time.perf_counter_ns()
            # Log-probabilities are read from the logits, which a graph-sampled sequence lacks.
            if self.device_sampling and seq.chain.device_capable and not seq.req.logprobs:
                seq.on_device = bool(L.llama_set_sampler(self.ctx.ptr, slot.seq_id, seq.chain.ptr))
            self._running.append(seq)

    def _batch_order(self) -> list[Sequence]:
        # Ascending seq ids, as llama-server builds its batch. With one KV stream per sequence
        # llama.cpp splits a batch into ubatches of consecutive seq ids in batch order
        # (split_equal, sequential): in arrival order, 8 streams that reused their prefixes
        # took 3-8 ubatches, each a pass over all the weights, for one token each.
        return sorted(self._running, key=lambda seq: seq.slot.seq_id)  # type: ignore[union-attr]

    def _decode_and_sample(self) -> None:
        running = self._batch_order()
        in_batch, laid = self._lay_out(running, self._chunks(running))
        batch = self._batch
        n = speculative.add_drafts(self, in_batch, laid)  # prompt-lookup or draft-model drafts
        # Logits rows: each decoding sequence's token and every drafted one.
        outputs = len(in_batch) + n - laid
        batch.n_tokens = n = self._shaper.pad(self._put, batch, n, outputs, self.ctx.n_batch)
        if n == 0:
            return
        rc = L.llama_decode(self.ctx.ptr, batch)
        self._shaper.take_out(self.ctx.forget)
        if rc != 0:
            self._fail_batch(rc)
            return
        speculative.sample_all(self, in_batch, time.perf_counter_ns())

    def _chunks(self, running: list[Sequence]) -> dict[int, list[int]]:
        """Prefill chunks by id(seq). Decode tokens come first so running streams never starve
        behind a long prefill: they get their seats before the prefills share what is left."""
        budget = self.ctx.n_batch - sum(1 for seq in running if not seq.prefilling)
        chunks: dict[int, list[int]] = {}
        for seq in running:
            if budget <= 0:
                break
            if seq.prefilling:
                start = len(seq.slot.tokens)  # type: ignore[union-attr]
                end = min(start + budget, len(seq.prompt) - 1)
                if seq.spans:
                    end = text_end(seq, start, end)  # an image is decoded on its own
                chunks[id(seq)] = chunk = seq.prompt[start:end]
                budget -= len(chunk)
        return chunks

    def _lay_out(self, running: list[Sequence], chunks: dict[int, list[int]]
                 ) -> tuple[list[Sequence], int]:
        """Every sequence's tokens in seq id order, prefills included, so that the first ubatch
        takes one token of each; an idle slot between them gets a placeholder token, so that
        it is one ubatch (shaping.py). Returns the decoding sequences and the batch length."""
        shaper = self._shaper
        order: list[Sequence | Slot] = [seq for seq in running
                                        if not seq.prefilling or chunks.get(id(seq))]
        fillers = shaper.fillers([seq.slot.seq_id for seq in order])  # type: ignore[union-attr]
        if fillers:
            order = sorted([*order, *fillers], key=lambda e: e.seq_id if isinstance(e, Slot)
                           else e.slot.seq_id)  # type: ignore[union-attr]
        in_batch: list[Sequence] = []
        n = 0
        for entry in order:
            if isinstance(entry, Slot):
                self._put(n, shaping.placeholder_token(entry, self.model), len(entry.tokens),
                          entry.seq_id, False)
                shaper.placed.append((entry, n))
            elif not entry.prefilling:
                slot = entry.slot
                assert slot is not None
                self._put(n, entry.next_token, len(slot.tokens), slot.seq_id, True)
                slot.tokens.append(entry.next_token)
                entry.batch_index = n
                in_batch.append(entry)
            else:
                slot, chunk = entry.slot, chunks[id(entry)]
                assert slot is not None
                for i, tok in enumerate(chunk):
                    self._put(n + i, tok, len(slot.tokens) + i, slot.seq_id, False)
                if not entry.on_device:  # a graph-sampled sequence may have one output only
                    shaper.quiet.extend(range(n, n + len(chunk)))
                slot.tokens.extend(chunk)
                n += len(chunk)
                continue
            n += 1
        return in_batch, n

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _sample(self, seq: Sequence, now: int) -> None:
        if seq.grammar is not None and seq.thinker is not None and seq.thinker.closed:
            self._start_grammar(seq)
        if seq.on_device:
            token = seq.chain.sample_on_device(self.ctx.ptr, seq.batch_index)
        else:
            token = seq.chain.sample(self.ctx.ptr, seq.batch_index)
        if seq.grammar is not None and not self._may_think(seq, token):
            # The answer does not open a block: the format holds from its first token, so this
            # one is drawn again, under the grammar, from the same logits.
            self._start_grammar(seq)
            token = seq.chain.sample(self.ctx.ptr, seq.batch_index)
        if not seq.t_first:
            seq.t_first = now
        if self.model.is_eog(token):
            self._finish(seq, FinishReason.STOP)
            return
        seq.next_token = token
        seq.generated += 1
        if seq.req.return_context:
            seq.generated_tokens.append(token)
        if seq.req.logprobs:
            seq.logprobs.append(token_logprob(self.model, self.ctx.ptr, seq.batch_index, token,
                                              seq.req.top_logprobs))
        thinking, text = self._split(seq, seq.stream.push(self.model.piece(token)))
        if text or thinking or seq.logprobs:
            self._out(seq.client, RequestOutput(seq.req.req_id, text, logprobs=seq.logprobs,
                                                thinking=thinking))
            seq.logprobs = []
        limit = seq.req.sampling.num_predict
        slot = seq.slot
        assert slot is not None
        if seq.stream.stopped:
            self._finish(seq, FinishReason.STOP)
        elif 0 < limit <= seq.generated:
            self._finish(seq, FinishReason.LENGTH)
        elif (limit < 0 and limit != -2
              and seq.generated >= UNLIMITED_CAP_CONTEXTS * self.ctx.n_ctx_seq):
            # Every negative num_predict but -2 means "unlimited", as in Ollama's runner.
            self._finish(seq, FinishReason.LENGTH)
        elif len(slot.tokens) + 1 >= self.ctx.n_ctx_seq:
            # num_predict -2 means "fill the context": no shift then.
            # Shifting would move an image's cells away from the positions it was encoded
            # for: sequences holding images stop instead (as llama-server does).
            if limit == -2 or seq.spans or not (seq.req.shift and shift_context(self.ctx, self.model, seq)):
                self._finish(seq, FinishReason.LENGTH)

    def _may_think(self, seq: Sequence, token: int) -> bool:
        assert seq.thinker is not None
        if not seq.thinker.undecided:
            return True  # inside the block (its end is seen after the token is fed)
        seq.lead += self.model.piece(token)
        return may_open(seq.lead.decode("utf-8", "ignore"))

    @staticmethod
    def _start_grammar(seq: Sequence) -> None:
        assert seq.grammar is not None and not seq.on_device
        seq.chain.close()
        seq.chain, seq.grammar = seq.grammar, None

    def _finish(self, seq: Sequence, reason: FinishReason, error: str = "") -> None:
        self._by_key.pop((seq.client, seq.req.req_id), None)
        self._detach(seq)
        if seq.slot is not None and seq.shifted_after >= 0:
            # Moved cells hold keys computed with text that is gone: no later prompt reuses them.
            del seq.slot.tokens[self.ctx.forget(seq.slot.seq_id, seq.shifted_after):]
        if seq.slot is not None:
            seq.slot.busy = False
            seq.slot = None
            self._running.remove(seq)
        seq.chain.close()
        if seq.grammar is not None:
            seq.grammar.close()
        if reason == FinishReason.ABORT:
            return
        tail = "" if seq.stream.stopped or reason == FinishReason.ERROR else seq.stream.flush()
        thinking, tail = self._split(seq, tail, last=True)
        now = time.perf_counter_ns()
        t_first = seq.t_first or now
        self._out(seq.client, RequestOutput(
            seq.req.req_id, tail, reason,
            prompt_tokens=len(seq.prompt),
            prompt_ns=max(t_first - (seq.t_admit or seq.t_submit), 1) + seq.encode_ns,
            eval_tokens=seq.generated,
            eval_ns=max(now - t_first, 1) if seq.generated else 0,
            context=self._context(seq) if seq.req.return_context else None,
            error=error, error_status=500 if error else 0, thinking=thinking,
            stop=seq.stream.stopped_by, drafted_tokens=seq.drafted, accepted_tokens=seq.accepted))

    @staticmethod
    def _split(seq: Sequence, text: str, last: bool = False) -> tuple[str, str]:
        """(thinking, content); a request that turned thinking off gets no thinking text."""
        if seq.thinker is None:
            return "", text
        thinking, content = seq.thinker.feed(text)
        if last:
            more_thinking, more_content = seq.thinker.finish()
            thinking, content = thinking + more_thinking, content + more_content
        return ("" if seq.req.think == "false" else thinking), content

    def _detach(self, seq: Sequence) -> None:
        # The context keeps a pointer to an attached chain: detach it before the chain is freed.
        if seq.on_device and seq.slot is not None:
            L.llama_set_sampler(self.ctx.ptr, seq.slot.seq_id, None)
            seq.on_device = False

    def _fail_batch(self, rc: int) -> None:
        # The KV state of every sequence in a failed batch is unknown: drop it all.
        message = f"llama_decode failed with status {rc}"
        for seq in list(self._running):
            slot = seq.slot
            if slot is not None:
                self.ctx.forget(slot.seq_id, 0)
                slot.tokens.clear()
            self._finish(seq, FinishReason.ERROR, message)

    def _out(self, client: bytes, output: RequestOutput) -> None:
        self._outbox.setdefault(client, []).append(output)
