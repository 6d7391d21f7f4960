"""Speculative decoding with a draft model, in-process on real llama.cpp contexts: the runner's
engine with a second, smaller model of the same vocabulary proposing each step's tokens.

Whatever the draft proposes, the answers are the very ones the engine gives without it: a
draft that is the model itself (every token kept), one with other weights (most rejected, so
the rollback of both caches runs), one sequence or five together, greedy or seeded."""

from __future__ import annotations

import pathlib

import pytest

from herd.protocol.wire import FinishReason, RequestOutput, SamplingParams, Submit
from herd.worker.engine.drafting import draft_model, speculative
from support.engines import engine_on
from support.tiny_models import write_tiny_llama

_CASES = [
    {"temperature": 0.0},
    {"temperature": 0.0, "repeat_penalty": 1.2, "repeat_last_n": 16},
    {"temperature": 0.7, "seed": 5},
    {"temperature": 0.0, "num_predict": 30},
]
_PROMPTS = ["hello world the sky is blue", "tell me a short story about the cat",
            "the sun the moon", "why is the sky blue"]


@pytest.fixture(scope="module")
def other_draft(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The same vocabulary, other weights, one layer: a draft the model mostly disagrees with."""
    return write_tiny_llama(tmp_path_factory.mktemp("draft") / "draft.gguf", seed=11,
                            block_count=1)


def _engine(model: pathlib.Path, draft: pathlib.Path | None):
    return engine_on(model, num_ctx=512, num_parallel=4, draft=draft)


def _run(engine, draft: int, together: bool) -> dict[int, list[RequestOutput]]:
    outputs: dict[int, list[RequestOutput]] = {}
    engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
    for i, (case, prompt) in enumerate(zip(_CASES, _PROMPTS)):
        params = SamplingParams(**{"num_predict": 60, **case}, draft_num_predict=draft)
        engine.submit(b"c", Submit(i, params, raw_prompt=prompt))
        while engine.has_work and not together:
            engine.step()
    while engine.has_work:
        engine.step()
    return outputs


def _texts(outputs: dict[int, list[RequestOutput]]) -> dict[int, str]:
    return {i: "".join(o.text for o in outs) for i, outs in outputs.items()}


@pytest.fixture(scope="module")
def plain(tiny_gguf: pathlib.Path):
    with _engine(tiny_gguf, None) as engine:
        yield {together: _run(engine, 0, together) for together in (False, True)}


@pytest.mark.parametrize("together", [False, True])
@pytest.mark.parametrize("which", ["itself", "other"])
def test_answers_are_identical_with_a_draft_model(tiny_gguf, other_draft, plain, which: str,
                                                  together: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The random model is never sure of anything: without this a lone sequence's draft would
    # end at its first token.
    monkeypatch.setattr(draft_model, "P_MIN", 0.0)
    kept, drafted = [], []
    settle = speculative.Speculation.settle

    def counting(self, n: int) -> None:
        kept.append(n)
        drafted.append(len(self.draft))
        settle(self, n)

    monkeypatch.setattr(speculative.Speculation, "settle", counting)
    with _engine(tiny_gguf, tiny_gguf if which == "itself" else other_draft) as engine:
        assert engine.drafter is not None
        off = _run(engine, 0, together)
        assert not drafted and engine.drafter.decodes == 0  # 0: no speculation at all
        on = _run(engine, 4, together)
        assert _texts(on) == _texts(off) == _texts(plain[together])
        for i, outs in on.items():
            want = plain[together][i][-1]
            assert (outs[-1].finish, outs[-1].eval_tokens) == (want.finish, want.eval_tokens)
            assert outs[-1].finish == FinishReason.LENGTH and not outs[-1].error
        assert sum(drafted) > 50 and max(drafted) == 4
        if which == "itself":
            # The model agrees with its greedy self; the seeded and penalised requests sample
            # otherwise than the draft's argmax, so they keep fewer (and together, a sequence
            # that waits after a miss holds back the others' drafts: they draft alike).
            assert sum(kept) > (0.4 if together else 0.5) * sum(drafted)
        else:
            assert sum(kept) < sum(drafted)  # rejections: both caches rolled back
        # The default for a model with a draft: four tokens, as Ollama's draft_num_predict.
        assert speculative.draft_limit(SamplingParams(draft_num_predict=-1), True) == 4
        again = _run(engine, -1, together)  # reused prefixes, in both caches
        assert _texts(again) == _texts(off)


def test_a_lone_sequence_stops_drafting_where_the_draft_is_unsure(tiny_gguf) -> None:
    """P_MIN as llama.cpp's --draft-p-min: the random draft is never 75 % sure of a token, so
    it proposes nothing and the model decodes alone (and answers the same)."""
    with _engine(tiny_gguf, tiny_gguf) as engine:
        outputs: dict[int, list[RequestOutput]] = {}
        engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
        engine.submit(b"c", Submit(1, SamplingParams(temperature=0.0, num_predict=20,
                                                     draft_num_predict=4), raw_prompt="hi"))
        while engine.has_work:
            engine.step()
        assert engine.drafter.decodes > 0 and engine.drafter.drafted == 0
        assert outputs[1][-1].eval_tokens == 20


@pytest.mark.parametrize("drafts_pay", [True, False])
def test_draft_num_predict_minus_one_runs_the_draft_model_only_where_it_pays(
        tiny_gguf, drafts_pay: bool) -> None:
    """-1 is "where it pays" for a draft model too, decided before the draft decodes: with the
    step times a CPU gives it never runs, with a GPU's it does (and answers the same)."""
    with _engine(tiny_gguf, tiny_gguf) as engine:
        # A drafted step costs 7/6 of a plain one (a GPU) or 10 plain ones.
        drafted = 7 / 6 if drafts_pay else 10.0
        speculative._engine(engine).cost.step_cost = {
            (1, 0): 6e6, **{(1, d): drafted for d in range(1, 5)}}
        outputs: dict[int, list[RequestOutput]] = {}
        engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
        engine.submit(b"c", Submit(1, SamplingParams(temperature=0.0, num_predict=20,
                                                     draft_num_predict=-1), raw_prompt="hi"))
        while engine.has_work:
            engine.step()
        assert (engine.drafter.decodes > 0) == drafts_pay
        assert outputs[1][-1].eval_tokens == 20
