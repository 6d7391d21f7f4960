"""The engine's side of requests with images: handed to the projector's thread at submit,
queued once their prompt is tokenized and encoded, their image embeddings decoded each step
after the token batch (herd.worker.engine.vision.step). A mixin of BatchEngine, which owns the
queues; kept apart so batch.py stays about tokens."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, wait

from herd.protocol.wire import FinishReason, RequestOutput, Submit
from herd.worker.engine.vision.imagefile import ImageError
from herd.worker.engine.prompt import RequestError
from herd.worker.engine.sequence import Sequence
from herd.worker.engine.sampler import InvalidFormat
from herd.worker.engine.textstream import TextStream
from herd.worker.engine.thinking import OPEN as THINK_OPEN, ThinkingSplitter
from herd.worker.engine.vision.projector import Projector
from herd.worker.engine.vision.prompt import VisionWorker
from herd.worker.engine.vision.step import ImageStep



class ImageRequests:
    # Why a model with a projector layer takes no images (set when the projector failed to load).
    vision_refusal = ""

    def _init_vision(self, projector: Projector | None) -> None:
        # Prompts with images are prepared on the projector's thread, then join the queue.
        self.vision = VisionWorker(projector, self.prompts) if projector is not None else None
        self._images = (ImageStep(self.ctx, projector.n_embd, projector.non_causal)
                        if projector is not None else None)
        self._encoding: list[Sequence] = []

    def _close_vision(self) -> None:
        if self.vision is not None:
            self.vision.close()
            self._images.close()

    def _submit_images(self, client: bytes, req: Submit) -> None:
        def refuse(error: str, status: int = 400) -> None:
            self._out(client, RequestOutput(req.req_id, finish=FinishReason.ERROR, error=error,
                                            error_status=status))

        if self.vision is None:
            return refuse(self.vision_refusal
                          or "this model is missing data required for image input")
        try:
            if req.render_only:
                text = self.vision.render(req)
                self._out(client, RequestOutput(req.req_id, text, FinishReason.STOP))
                return
            chain, grammar = self._chains(req)
        except (RequestError, InvalidFormat) as e:
            return refuse(str(e), getattr(e, "status", 400))
        from herd.worker.engine.sequence import Sequence

        seq = Sequence(client=client, req=req, prompt=[], stream=TextStream(req.sampling.stop),
                       chain=chain, t_submit=time.perf_counter_ns(), grammar=grammar)
        seq.encoding = self.vision.submit(req, self.ctx.n_batch)
        self._by_key[(client, req.req_id)] = seq
        self._encoding.append(seq)

    def _collect_encoded(self) -> None:
        """Sequences whose images the projector's thread has encoded join the queue."""
        if not (self._running or self._waiting):
            # Only encodes in flight: wait for one a moment rather than spin the loop.
            wait([s.encoding for s in self._encoding], timeout=0.02, return_when=FIRST_COMPLETED)
        for seq in [s for s in self._encoding if s.encoding.done()]:
            self._encoding.remove(seq)
            future, seq.encoding = seq.encoding, None
            try:
                prompt = future.result()
            except (RequestError, ImageError) as e:
                self._fail_submit(seq, str(e), getattr(e, "status", 400))
                continue
            except Exception as e:  # a projector failure answers this request only
                self._fail_submit(seq, f"failed to process the images: {e}", 500)
                continue
            seq.prompt, seq.spans = prompt.cells, prompt.spans
            seq.encode_ns = time.perf_counter_ns() - seq.t_submit
            if seq.req.split_thinking:
                seq.thinker = ThinkingSplitter(
                    opened_by_prompt=prompt.text.rstrip().endswith(THINK_OPEN))
            self._waiting.append(seq)

    def _fail_submit(self, seq: Sequence, error: str, status: int) -> None:
        self._by_key.pop((seq.client, seq.req.req_id), None)
        seq.chain.close()
        if seq.grammar is not None:
            seq.grammar.close()
        self._out(seq.client, RequestOutput(seq.req.req_id, finish=FinishReason.ERROR,
                                            error=error, error_status=status))

    @staticmethod
    def _context(seq: Sequence) -> list[int]:
        # An image has no token ids: a context handed back holds the text around it only.
        prompt = [c for c in seq.prompt if isinstance(c, int)] if seq.spans else seq.prompt
        return prompt + seq.generated_tokens

    def _decode_images(self) -> None:
        failed, rc = self._images.run(self._running)
        for seq in failed:
            slot = seq.slot
            if slot is not None:
                self.ctx.forget(slot.seq_id, 0)
                slot.tokens.clear()
            self._finish(seq, FinishReason.ERROR, f"llama_decode of an image failed with status {rc}")
