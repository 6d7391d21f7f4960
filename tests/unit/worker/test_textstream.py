"""worker/textstream.py: incremental detokenization that never splits a UTF-8 character or a stop."""

from __future__ import annotations

import pytest

from herd.worker.engine.textstream import TextStream


def push_all(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(p) for p in pieces]


def bytewise(text: str) -> list[bytes]:
    return [bytes([b]) for b in text.encode("utf-8")]


def test_without_stops_text_passes_straight_through() -> None:
    stream = TextStream([])
    assert push_all(stream, [b"Hello", b", ", b"world"]) == ["Hello", ", ", "world"]
    assert stream.flush() == ""
    assert stream.stopped is False


def test_empty_stop_strings_are_ignored() -> None:
    stream = TextStream(["", ""])
    assert stream.push(b"abc") == "abc"
    assert stream.stopped is False


@pytest.mark.parametrize("char", ["€", "é", "😀", "中"])
@pytest.mark.parametrize("stops", [[], ["</s>"]])
def test_a_multibyte_character_is_emitted_only_when_complete(char: str, stops: list[str]) -> None:
    stream = TextStream(stops)
    pieces = bytewise(char)
    outputs = push_all(stream, pieces)
    assert outputs == [""] * (len(pieces) - 1) + [char]
    assert stream.flush() == ""


def test_every_emitted_chunk_is_whole_characters() -> None:
    text = "naïve café → 😀 done"
    stream = TextStream(["STOP"])
    outputs = push_all(stream, bytewise(text))
    assert "".join(outputs) + stream.flush() == text
    assert "\ufffd" not in "".join(outputs)


def test_an_unfinished_character_at_the_end_is_flushed_as_a_replacement() -> None:
    stream = TextStream([])
    assert stream.push(b"ok \xe2\x82") == "ok "
    assert stream.flush() == "\ufffd"


def test_a_stop_arriving_across_pushes_is_never_emitted_even_partially() -> None:
    stream = TextStream(["</end>"])
    outputs = push_all(stream, [b"hi <", b"/e", b"nd", b"> trailing"])
    assert outputs == ["hi ", "", "", ""]
    assert stream.stopped is True
    assert "<" not in "".join(outputs)


def test_text_before_the_stop_in_the_same_push_is_emitted() -> None:
    stream = TextStream(["STOP"])
    assert stream.push(b"the answer STOP ignored") == "the answer "
    assert stream.stopped is True


def test_a_stop_made_of_multibyte_characters_is_caught_across_byte_pushes() -> None:
    stream = TextStream(["€€"])
    emitted = ""
    for piece in bytewise("x€€y"):
        emitted += stream.push(piece)
        if stream.stopped:  # the engine finishes the sequence here
            break
    assert emitted == "x"
    assert stream.stopped is True


def test_the_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["world", "lo"])
    assert stream.push(b"hello world") == "hel"
    assert stream.stopped is True


def test_the_earliest_stop_wins_regardless_of_list_order() -> None:
    stream = TextStream(["bcd", "ab"])
    assert stream.push(b"xabcd") == "x"


def test_a_held_back_partial_stop_is_released_when_it_turns_out_not_to_be_one() -> None:
    stream = TextStream(["ab"])
    assert stream.push(b"xa") == "x"
    assert stream.push(b"c") == "ac"
    assert stream.stopped is False


def test_a_repeated_stop_prefix_is_held_only_once() -> None:
    stream = TextStream(["ab"])
    assert push_all(stream, [b"a", b"a", b"b"]) == ["", "a", ""]
    assert stream.stopped is True


def test_the_longest_possible_stop_prefix_is_held() -> None:
    stream = TextStream(["<|im_end|>", "<x"])
    assert stream.push(b"ok <|im_") == "ok "
    assert stream.push(b"end|>") == ""
    assert stream.stopped is True


def test_flush_returns_held_text_when_generation_ends_without_a_stop() -> None:
    stream = TextStream(["<|im_end|>"])
    assert stream.push(b"answer <|im") == "answer "
    assert stream.flush() == "<|im"
    assert stream.flush() == ""
    assert stream.stopped is False


def test_nothing_is_lost_or_duplicated_without_a_stop() -> None:
    text = "a<b<<c<|d|<|im_en e"
    stream = TextStream(["<|im_end|>"])
    outputs = push_all(stream, bytewise(text))
    assert "".join(outputs) + stream.flush() == text
    assert stream.stopped is False
