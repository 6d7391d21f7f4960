"""The runner's thinking splitter: the <think> block is found wherever the tokens cut it."""

from __future__ import annotations

import pytest

from herd.worker.engine.thinking import ThinkingSplitter


ANSWER = "<think>weigh it up</think>\n\nThe answer."


def _split(chunks: list[str], **kw: bool) -> tuple[str, str]:
    splitter = ThinkingSplitter(**kw)
    thinking, content = "", ""
    for chunk in chunks:
        t, c = splitter.feed(chunk)
        thinking, content = thinking + t, content + c
    t, c = splitter.finish()
    return thinking + t, content + c


@pytest.mark.parametrize("cut", range(len(ANSWER) + 1))
def test_the_block_is_found_wherever_the_tokens_cut_it(cut: int) -> None:
    assert _split([ANSWER[:cut], ANSWER[cut:]]) == ("weigh it up", "The answer.")


def test_one_character_at_a_time() -> None:
    assert _split(list("  " + ANSWER)) == ("weigh it up", "The answer.")


@pytest.mark.parametrize("chunks, opened, expected", [
    (["plain answer <think>not a block</think>"], False,
     ("", "plain answer <think>not a block</think>")),
    (["reasoning</think>answer"], True, ("reasoning", "answer")),
    (["still thinking when cut off"], True, ("still thinking when cut off", "")),
    (["<think>never closed"], False, ("never closed", "")),
    (["<thi"], False, ("", "<thi")),
    (["<think>a</thi", "nk>b"], False, ("a", "b")),
    (["<think>a </", "think"], False, ("a </think", "")),
])
def test_edge_cases(chunks: list[str], opened: bool, expected: tuple[str, str]) -> None:
    assert _split(chunks, opened_by_prompt=opened) == expected


def test_closed_and_undecided() -> None:
    from herd.worker.engine.thinking import may_open

    s = ThinkingSplitter()
    assert s.undecided and not s.closed
    s.feed("  <thi")
    assert s.undecided
    s.feed("nk>why")
    assert not s.undecided and not s.closed
    s.feed("</think>")
    assert s.closed
    plain = ThinkingSplitter()
    plain.feed("Hello")
    assert plain.closed
    assert may_open("") and may_open("  \n") and may_open(" <th") and may_open("<think>x")
    assert not may_open("{") and not may_open("</think>") and not may_open("Hi")
