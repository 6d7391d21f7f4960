"""Image placement and the cell keys of prompts with images, without a model.

Ollama's server/prompt.go (imageTaggedMessages) is the reference for the tags: [img-N]
numbered across messages, before the text or in place of the user's own [img]."""

from __future__ import annotations

import pytest

from herd.protocol.wire import ChatTurn
from herd.worker.engine.prompt import RequestError
from herd.worker.engine.vision.projector import ImageChunk
from herd.worker.engine.vision.prompt import (ImageSpan, VisionPrompt, _cut, split_tagged, tag_raw,
                                              tag_turns)
from herd.worker.engine.vision.step import reuse_boundary, text_end


def test_tags_number_across_turns_and_replace_the_users_own() -> None:
    turns, images = tag_turns([
        ChatTurn("system", "be brief"),
        ChatTurn("user", "what is this?", images=[b"a", b"b"]),
        ChatTurn("assistant", "two cats"),
        ChatTurn("user", "and [img] here, [img] there", images=[b"c"]),
    ])
    assert images == [b"a", b"b", b"c"]
    assert [t.content for t in turns] == ["be brief", "[img-0][img-1]what is this?", "two cats",
                                          "and [img-2] here, [img] there"]
    assert all(not t.images for t in turns)


def test_raw_prompt_keeps_its_own_tags() -> None:
    assert tag_raw("look [img-1] then", [b"a", b"b"]) == "[img-0]look [img-1] then"


def test_split_takes_the_first_tag_of_each_image() -> None:
    assert split_tagged("a[img-1]b[img-0]c[img-0]", 2) == ["a", 1, "b", 0, "c[img-0]"]
    with pytest.raises(RequestError, match="dropped image 2"):
        split_tagged("no tags [img-0]", 2)


def _prompt(cells_before: int, n_image: int, cells_after: int) -> VisionPrompt:
    chunk = ImageChunk(n_image, n_image, "h")
    cells = list(range(cells_before)) + [("img", "h", i) for i in range(n_image)] + list(
        range(100, 100 + cells_after))
    return VisionPrompt("", cells, [ImageSpan(cells_before, chunk)])


def test_cut_never_falls_inside_an_image() -> None:
    # keep 4 from the start: the image starting at 2 would be split, so the head stops at 2
    cut = _cut(_prompt(2, 6, 30), keep=4, limit=32)
    assert all(not isinstance(c, tuple) for c in cut.cells) and cut.spans == []
    # the tail (24 cells) would start inside the image: it starts after the image instead
    cut = _cut(_prompt(10, 6, 20), keep=0, limit=32)
    assert cut.cells == list(range(100, 120)) and cut.spans == []
    # an image wholly in the tail moves with it
    cut = _cut(_prompt(20, 4, 10), keep=2, limit=32)
    assert len(cut.cells) == 2 + 22 and cut.spans[0].start == 2 + 8
    assert cut.cells[cut.spans[0].start] == ("img", "h", 0)


def test_reuse_stops_at_the_start_of_an_image() -> None:
    prompt = _prompt(3, 4, 3).cells
    assert reuse_boundary(prompt, 5) == 3  # cell 5 is the image's third
    assert reuse_boundary(prompt, 3) == 3 and reuse_boundary(prompt, 7) == 7


def test_prefill_chunks_stop_before_an_image() -> None:
    class Seq:
        spans = _prompt(3, 4, 3).spans

    assert text_end(Seq, 0, 10) == 3  # text up to the image
    assert text_end(Seq, 3, 10) == 3  # the image is next: no text this step
    assert text_end(Seq, 7, 9) == 9  # past the image
