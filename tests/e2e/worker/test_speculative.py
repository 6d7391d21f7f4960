"""Speculative decoding by prompt lookup, in-process on a real llama.cpp context: the answers of
greedy, seeded, penalised and logprob requests are the very ones the engine gives without it,
while drafts were in fact kept and rejected (so both the acceptance and the rollback ran).

llama.cpp's server is the reference for verifying drafts by exact match with the sequence's
own sampler (tools/server/server-context.cpp, common_sampler_sample_and_accept_n); Ollama's
`draft_num_predict` option (api/types.go, Runner.DraftNumPredict) names the draft length."""

from __future__ import annotations

import pathlib
import time

import pytest

from herd.protocol.wire import FinishReason, RequestOutput, SamplingParams, Submit
from herd.worker.engine.drafting import odds, speculative
from support.engines import engine_on

# The tiny random model loops at temperature 0, so its answers repeat themselves: drafts hit.
_CASES = [
    {"temperature": 0.0},
    {"temperature": 0.0, "repeat_penalty": 1.2, "repeat_last_n": 16},
    {"temperature": 0.7, "seed": 5},
    {"temperature": 1.0, "top_k": 8, "seed": 9, "presence_penalty": 0.4},
    {"temperature": 0.0, "num_predict": 40},
]
_PROMPTS = ["hello world the sky is blue and the sky is blue and the sky",
            "tell me a short story about the cat and the dog and the cat",
            "the sun the moon the sun the moon the sun the",
            "why is the sky blue", "yes no yes no yes no"]


def _run(engine, draft: int, logprobs: bool = False,
         together: bool = False) -> dict[int, list[RequestOutput]]:
    outputs: dict[int, list[RequestOutput]] = {}
    engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
    for i, (case, prompt) in enumerate(zip(_CASES, _PROMPTS)):
        params = SamplingParams(**{"num_predict": 80, **case}, draft_num_predict=draft)
        engine.submit(b"c", Submit(i, params, raw_prompt=prompt, logprobs=logprobs,
                                   top_logprobs=2 if logprobs else 0))
        while engine.has_work and not together:
            engine.step()
    while engine.has_work:  # together: all five share every decode
        engine.step()
    return outputs


@pytest.fixture(scope="module")
def engine(tiny_gguf: pathlib.Path):
    with engine_on(tiny_gguf, num_ctx=512, num_parallel=5) as engine:
        yield engine


def _text(outs: list[RequestOutput]) -> str:
    return "".join(o.text for o in outs)


@pytest.mark.parametrize("logprobs,together", [(False, False), (True, False), (False, True)])
def test_answers_are_identical_with_and_without_drafts(engine, logprobs: bool, together: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kept, rejected = [], []
    settle = speculative.Speculation.settle

    def counting(self, n: int) -> None:
        kept.append(n)
        rejected.append(len(self.draft) - n)
        settle(self, n)

    monkeypatch.setattr(speculative.Speculation, "settle", counting)
    plain = _run(engine, 0, logprobs, together)
    assert not kept  # draft_num_predict 0: no speculation at all
    drafted = _run(engine, 6, logprobs, together)
    if not together:  # together, sequences draft only when all of them do (propose_all)
        assert sum(kept) > 40 and sum(rejected) > 0
    # The final outputs count them too (herd_draft_tokens_total).
    assert sum(o[-1].accepted_tokens for o in drafted.values()) == sum(kept)
    assert sum(o[-1].drafted_tokens for o in drafted.values()) == sum(kept) + sum(rejected)
    assert sorted(drafted) == sorted(plain) == list(range(len(_CASES)))
    for i in plain:
        assert _text(drafted[i]) == _text(plain[i])
        a, b = drafted[i][-1], plain[i][-1]
        assert (a.finish, a.eval_tokens) == (b.finish, b.eval_tokens)
        assert a.finish == FinishReason.LENGTH and not a.error
        if logprobs:
            # Same tokens; the values agree to rounding only: ggml's CPU kernels (attention
            # above all) block the work by the batch's row count, and drafts add rows, as
            # more sequences in the same batch do without speculation.
            got = [lp for o in drafted[i] for lp in o.logprobs]
            want = [lp for o in plain[i] for lp in o.logprobs]
            assert [(lp.token, [t.token for t in lp.top]) for lp in got] == \
                [(lp.token, [t.token for t in lp.top]) for lp in want]
            assert [lp.logprob for lp in got] == pytest.approx([lp.logprob for lp in want],
                                                               abs=1e-3)
    # The KV mirror holds no rejected draft: a repeated request reuses it and answers the same.
    again = _run(engine, -1, logprobs, together)
    assert {i: _text(o) for i, o in again.items()} == {i: _text(o) for i, o in plain.items()}


def test_grammar_and_stop_requests(engine) -> None:
    outputs: dict[int, list[RequestOutput]] = {}
    engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
    engine.submit(b"c", Submit(1, SamplingParams(temperature=0.0, num_predict=20, format="json"),
                               raw_prompt="the sky"))
    engine.submit(b"c", Submit(2, SamplingParams(temperature=0.0, num_predict=60,
                                                 draft_num_predict=-1), raw_prompt=_PROMPTS[2]))
    engine.step()
    engine.step()  # the first step prefills, the second decodes: drafting is decided then
    specs = {seq.req.req_id: seq.spec for seq in engine._running}
    assert specs[1] is speculative.OFF  # a grammar never speculates
    assert specs[2] is not None and specs[2] is not speculative.OFF
    while engine.has_work:
        engine.step()
    plain = _text(outputs[2])
    # A stop string inside a kept draft ends the answer there, as it does without drafts.
    stop = plain.split()[len(plain.split()) // 2]
    for draft in (0, 8):
        outputs.clear()
        engine.submit(b"c", Submit(3, SamplingParams(temperature=0.0, num_predict=60, stop=[stop],
                                                     draft_num_predict=draft),
                                   raw_prompt=_PROMPTS[2]))
        while engine.has_work:
            engine.step()
        if draft == 0:
            expected = outputs[3]
        else:
            assert _text(outputs[3]) == _text(expected)
            assert outputs[3][-1].finish == FinishReason.STOP
            assert outputs[3][-1].eval_tokens == expected[-1].eval_tokens


def test_kept_depth_counts_whole_drafts_apart_from_partial_ones() -> None:
    depth = odds.KeptDepth()
    for _ in range(20):  # half the drafts kept whole, half not at all: a rewrite's pattern
        depth.learn(7, 7)
        depth.learn(7, 0)
    reach = depth.reach(7)
    assert all(0.4 < r < 0.6 for r in reach)  # the 7th token as likely as the 1st
    assert reach == sorted(reach, reverse=True)
    depth.learn(3, 3)  # a short draft says nothing of depths it did not have
    assert depth.reach(7)[3:] == reach[3:]
    fresh = odds.KeptDepth().reach(3)
    assert fresh == [0.5, 0.25, 0.125]  # before anything is checked


def test_a_sequence_keeps_its_record_apart_after_a_whole_draft() -> None:
    spec = speculative.Speculation(7)
    for _ in range(10):  # after a whole draft the next is whole; after a miss, a miss
        spec._learn(7, 7, 1)
        spec._learn(7, 0, 0)
    spec._learn(7, 7, 1)
    assert spec.reach(7)[-1] > 0.8  # right after a whole draft
    spec._learn(7, 0, 1)
    spec._learn(7, 0, 0)
    assert spec.reach(7)[0] < 0.2  # right after a miss


def test_draft_limit() -> None:
    assert speculative.draft_limit(SamplingParams()) == 0  # off unless asked for
    assert speculative.draft_limit(SamplingParams(draft_num_predict=-1)) == speculative.DEFAULT_DRAFT
    assert speculative.draft_limit(SamplingParams(draft_num_predict=0)) == 0
    assert speculative.draft_limit(SamplingParams(draft_num_predict=3)) == 3
    assert speculative.draft_limit(SamplingParams(format="json")) == 0


def _per_token(chance: float) -> list[float]:
    """The reach of drafts each of whose tokens is kept with this chance."""
    return [chance ** (j + 1) for j in range(7)]


def test_default_drafts_only_where_they_pay() -> None:
    cost = odds.DraftCost()

    def step(seqs: int, drafted: int, ms: float, clean: bool = True) -> None:
        cost.started(seqs, drafted, clean)
        cost.decoded((cost._t0 or time.perf_counter_ns()) + int(ms * 1e6))

    assert cost.best(1, 7, _per_token(0.5)) == 0  # nothing measured yet: a plain step first
    step(1, 0, 6.0)  # a plain step: 1 token in 6 ms
    assert cost.best(1, 7, _per_token(0.5)) == 7  # then the draft, to measure it
    step(1, 7, 7.0)  # a GPU: 7 drafted tokens add 1 ms
    assert cost.best(1, 7, _per_token(0.5)) > 0  # drafts pay
    cost = odds.DraftCost()
    step(1, 0, 6.0)  # this CPU: 8 rows cost 4.5 plain steps, 4 rows 2.8 (bench/RESULTS.md)
    for drafted, ms in ((1, 12.2), (2, 15.0), (3, 17.0), (4, 24.0), (5, 25.0), (6, 27.0)):
        step(1, drafted, ms)
    for _ in range(30):
        step(1, 7, 27.0)
    assert cost.best(1, 7, _per_token(0.5)) == 0  # half the drafts kept: a plain step is faster
    assert cost.best(1, 7, _per_token(0.97)) == 7  # a text copied nearly verbatim
    assert cost.best(1, 7, _per_token(0.85)) == 3  # the shorter, measured shape pays better
    assert cost.best(4, 7, _per_token(0.97)) == 0  # four sequences in a step are measured apart
    step(1, 7, 1.0, clean=False)  # a step with a prefill chunk in it measures nothing
    assert cost.best(1, 7, _per_token(0.5)) == 0


def test_a_draft_measured_while_the_machine_was_busy_is_not_condemned() -> None:
    cost = odds.DraftCost()

    def step(drafted: int, ms: float) -> None:
        cost.started(1, drafted, True)
        cost.decoded(cost._t0 + int(ms * 1e6))

    for _ in range(20):
        step(0, 12.0)  # busy: a plain step takes 12 ms
    step(7, 24.0)  # and the draft 24: two plain steps' worth
    for _ in range(20):
        step(0, 6.0)  # quiet again
    # Two plain steps for 3.1 expected tokens pays; 24 ms, 4 of today's plain steps, would not.
    reach = [0.3] * 7
    assert cost.best(1, 7, reach) == 7
    cost.step_cost[(1, 7)] = 4.0
    assert cost.best(1, 7, reach) == 0


def test_a_length_not_measured_yet_is_costed_on_the_line_and_tried() -> None:
    cost = odds.DraftCost()
    cost.step_cost = {(1, 0): 6e6, (1, 7): 4.5}  # a CPU: 8 rows cost 4.5 plain steps
    # On the line from 1 to 4.5 plain steps, 2 drafted tokens would cost 2: the best rate here.
    assert cost.best(1, 7, _per_token(0.85)) == 2
    cost.step_cost[(1, 2)] = 3.0  # tried: worse than the line said
    assert cost.best(1, 7, _per_token(0.85)) == 3  # the next best on the line, to be tried
    cost.step_cost.update({(1, d): d + 1.0 for d in (1, 3, 4, 5, 6)})  # all as bad
    assert cost.best(1, 7, _per_token(0.85)) == 0  # measured, none pays


def test_a_held_back_draft_is_checked_against_what_came_instead() -> None:
    spec = speculative.Speculation(7)
    cost = odds.DraftCost()
    cost.step_cost = {(1, 0): 6e6, (1, 6): 26 / 6}
    tokens = [1, 2, 3, 4, 5, 9, 1, 2, 3]
    assert spec.propose(tokens, 100) == [4, 5, 9, 1, 2, 3]
    assert not spec.worth(cost, 1) and spec.draft == []  # at the prior odds it does not pay
    before = spec.reach(6)
    for token in (4, 5, 9, 1, 2, 3):  # the text went on as the draft said
        tokens.append(token)
        spec.propose(tokens, 100)
    # Learnt without a drafted decode, in the record of drafts made after a miss (the state the
    # held-back draft was made in).
    assert all(a > b for a, b in zip(spec._depths[0].reach(6), before))


def test_a_draft_cut_short_and_kept_whole_is_checked_to_its_proposals_end() -> None:
    spec = speculative.Speculation(7)
    cost = odds.DraftCost()
    # Only a 2-token draft pays here, so the 6-token proposal is cut to 2.
    cost.step_cost = {(1, 0): 6e6, (1, 1): 2.0, (1, 2): 7 / 6, (1, 3): 7.0, (1, 4): 8.0,
                      (1, 5): 9.0, (1, 6): 10.0}
    tokens = [1, 2, 3, 4, 5, 9, 1, 2, 3]
    assert spec.propose(tokens, 100) == [4, 5, 9, 1, 2, 3]
    assert spec.worth(cost, 1) and spec.draft == [4, 5]
    before = spec._depths[0].reach(6)
    spec.settle(2)  # both kept
    assert spec._whole == 1  # the state is the decoded draft's: kept whole
    assert spec._depths[0].reach(6) == before  # how far the proposal went is not known yet
    tokens += [4, 5]
    for token in (9, 1, 2, 3):  # the text went on as the whole proposal said
        tokens.append(token)
        spec.propose(tokens, 100)
    after = spec._depths[0].reach(6)
    assert after[5] > before[5]  # the cut part counts as kept: longer drafts would have paid


@pytest.fixture(scope="module")
def gemma3_engine(tmp_path_factory: pytest.TempPathFactory):
    """A tiny gemma3 converted by Herd's own create path: a 4-token sliding window on every
    other layer, so drafts and their rollback cross the window's edge all the time."""
    from herd.gateway.store.convert import convert_safetensors
    from support import convert_fixtures

    root = tmp_path_factory.mktemp("swa")
    src, _ = convert_fixtures.write_gemma3(root)
    convert_safetensors(src, root / "gemma3.gguf")
    with engine_on(root / "gemma3.gguf", num_ctx=256, num_parallel=5) as engine:
        yield engine


@pytest.mark.parametrize("together", [False, True])
def test_a_sliding_window_model_speculates_with_the_same_answers(
        gemma3_engine, together: bool) -> None:
    """A full-size sliding-window cache prunes no cell, so rejected drafts can be cut off as
    on any other model (they were refused before)."""
    assert gemma3_engine.ctx.swa_full and speculative.can_speculate(gemma3_engine.model,
                                                                    gemma3_engine.ctx)
    plain = _run(gemma3_engine, 0, together=together)
    drafted = _run(gemma3_engine, 6, together=together)
    accepted = sum(o[-1].accepted_tokens for o in drafted.values())
    rejected = sum(o[-1].drafted_tokens for o in drafted.values()) - accepted
    assert accepted > 10 and rejected > 0  # both the acceptance and the rollback ran
    for i in plain:
        assert _text(drafted[i]) == _text(plain[i])
        assert drafted[i][-1].eval_tokens == plain[i][-1].eval_tokens


def test_no_draft_reaches_past_num_predict(engine) -> None:
    """A request 3 tokens from its end samples at most 3 more: a longer draft is wasted rows."""
    outputs: dict[int, list[RequestOutput]] = {}
    engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
    engine.submit(b"c", Submit(7, SamplingParams(temperature=0.0, num_predict=3,
                                                 draft_num_predict=6), raw_prompt=_PROMPTS[2]))
    while engine.has_work:
        engine.step()
    final = outputs[7][-1]
    # The prompt ends in a bigram it had before: the first step drafts, two tokens at most.
    assert final.eval_tokens == 3 and 1 <= final.drafted_tokens <= 2
