"""The batching engine with a projector: images beside text streams, KV reuse over images.

Real llama.cpp and libmtmd on the tiny models the suite writes; the engine driven step by step
as the runner drives it (no sockets)."""

from __future__ import annotations


import pytest

from herd.protocol.wire import ChatTurn, RequestOutput, RunnerSpec, SamplingParams, Submit
from herd.worker.runner import load_engine
from support.tiny_models import write_tiny_llama
from support.tiny_vision import BLUE, RED, gradient_png, solid_png, write_tiny_projector


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("vision-batch")
    return (str(write_tiny_llama(folder / "tiny.gguf", seed=0)),
            str(write_tiny_projector(folder / "mmproj.gguf")))


class Run:
    def __init__(self, paths: tuple[str, str], parallel: int = 4) -> None:
        self.steps: list[list[RequestOutput]] = []
        spec = RunnerSpec(key="t", model_digest="", num_ctx=256, num_parallel=parallel,
                          num_threads=2)
        _, self.engine = load_engine(spec, lambda _, outs: self.steps[-1].extend(outs),
                                     paths[0], projector_path=paths[1])

    def until_done(self) -> None:
        while self.engine.has_work:
            self.steps.append([])
            self.engine.step()

    def text_of(self, req_id: int) -> str:
        return "".join(o.text for step in self.steps for o in step if o.req_id == req_id)

    def final(self, req_id: int) -> RequestOutput:
        return next(o for step in self.steps for o in step if o.req_id == req_id and o.finish)


def image_req(req_id: int, image: bytes, tokens: int = 12, text: str = "what is it?") -> Submit:
    return Submit(req_id, SamplingParams(temperature=0, num_predict=tokens),
                  messages=[ChatTurn("user", text, images=[image])])


def text_req(req_id: int, tokens: int) -> Submit:
    return Submit(req_id, SamplingParams(temperature=0, num_predict=tokens),
                  raw_prompt=f"story {req_id}:")


def test_text_streams_decode_every_step_while_images_encode_and_prefill(paths) -> None:
    alone = Run(paths)
    alone.engine.submit(b"c", image_req(9, gradient_png(seed=1)))
    alone.until_done()
    run = Run(paths)
    for i in range(2):
        run.engine.submit(b"c", text_req(i, 40))
    for _ in range(3):
        run.steps.append([])
        run.engine.step()
    run.engine.submit(b"c", image_req(9, gradient_png(seed=1)))
    run.engine.submit(b"c", image_req(10, solid_png(RED)))
    run.until_done()
    for i in range(2):
        # one token per step from the first to the last: no step went by without one
        produced = [any(o.req_id == i and o.text for o in step) for step in run.steps]
        first, last = produced.index(True), len(produced) - produced[::-1].index(True)
        assert all(produced[first:last]) and run.final(i).eval_tokens == 40
    assert run.text_of(9) == alone.text_of(9)
    assert run.text_of(10) != run.text_of(9)


def test_the_same_image_next_turn_is_reused_from_the_kv_cache(paths) -> None:
    run = Run(paths, parallel=1)
    run.engine.submit(b"c", image_req(1, solid_png(BLUE)))
    run.until_done()
    assert run.engine._images.decodes == 1
    slot = run.engine._slots[0]
    assert sum(1 for cell in slot.tokens if isinstance(cell, tuple)) == 16
    # the next turn carries the same image: its cells are reused, never decoded again
    second = Submit(2, SamplingParams(temperature=0, num_predict=4), messages=[
        ChatTurn("user", "what is it?", images=[solid_png(BLUE)]),
        ChatTurn("assistant", run.text_of(1)), ChatTurn("user", "and now?")])
    run.engine.submit(b"c", second)
    run.until_done()
    assert run.engine._images.decodes == 1 and run.final(2).prompt_tokens > 16
    # a different image in the same place: the prefix stops at the image's start
    run.engine.submit(b"c", image_req(3, solid_png(RED)))
    run.until_done()
    assert run.engine._images.decodes == 2


def test_an_abort_while_encoding_answers_nothing_and_frees_nothing(paths) -> None:
    run = Run(paths)
    run.engine.submit(b"c", image_req(1, gradient_png(seed=2)))
    run.engine.abort(b"c", 1)
    run.engine.submit(b"c", text_req(2, 3))
    run.until_done()
    assert run.text_of(1) == "" and all(o.req_id != 1 for s in run.steps for o in s)
    assert run.final(2).eval_tokens == 3
