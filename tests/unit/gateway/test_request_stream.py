"""gateway/request_stream.py: the per-request mailbox between the ZeroMQ reader and HTTP."""

from __future__ import annotations

import asyncio

import pytest

from herd.gateway.cluster.request_stream import MAX_CHUNK_CHARS, RequestStream, Update
from herd.gateway.errors import StreamFailed
from herd.protocol.wire import FinishReason, RequestOutput, TokenLogprob


def test_deltas_that_arrive_together_are_merged_into_one_chunk() -> None:
    async def main() -> Update:
        stream = RequestStream(1)
        for piece in ("a", "b", "c"):
            stream.feed(RequestOutput(1, piece, logprobs=[TokenLogprob(piece, -1.0)],
                                      thinking=piece.upper()))
        return await stream.next()

    update = asyncio.run(main())
    assert (update.text, update.thinking, update.final) == ("abc", "ABC", None)
    assert [lp.token for lp in update.logprobs] == ["a", "b", "c"]


def test_a_huge_backlog_comes_out_in_bounded_chunks_and_nothing_is_lost() -> None:
    async def main() -> list[str]:
        stream = RequestStream(1)
        stream.feed(RequestOutput(1, "x" * (2 * MAX_CHUNK_CHARS + 10)))
        stream.feed(RequestOutput(1, "end", FinishReason.STOP))
        chunks = []
        while True:
            update = await stream.next()
            text, final = update.text, update.final
            chunks.append(text)
            if final is not None:
                return chunks

    chunks = asyncio.run(main())
    assert all(len(c) <= MAX_CHUNK_CHARS for c in chunks)
    assert "".join(chunks) == "x" * (2 * MAX_CHUNK_CHARS + 10) + "end"


def test_text_before_an_error_is_delivered_then_the_error() -> None:
    async def main() -> None:
        stream = RequestStream(1)
        stream.feed(RequestOutput(1, "partial"))
        stream.fail("runner died")
        assert await stream.next() == Update("partial")
        with pytest.raises(StreamFailed, match="runner died"):
            await asyncio.wait_for(stream.next(), 5)

    asyncio.run(main())
