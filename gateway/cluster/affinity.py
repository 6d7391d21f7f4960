"""Prefix affinity: requests whose prompts begin alike (a conversation's next turn, an agent's
fixed system prompt) go to the replica that served the last ones, whose slots hold those tokens
in their KV cache. The gateway does not tokenize, so a prompt is compared as a chain of hashes
of fixed-size blocks of its text: equal leading hashes, equal leading text."""

from __future__ import annotations

from collections import deque

from herd.protocol.wire import Submit

BLOCK_CHARS = 256
MAX_BLOCKS = 256  # 64k characters: beyond that a longer match changes nothing
MIN_MATCH_BLOCKS = 2  # shorter shared starts (a chat template's header) are not worth a detour

Signature = tuple[int, ...]


def prompt_text(submit: Submit) -> str:
    if submit.raw_prompt is not None:
        return submit.raw_prompt
    parts = [submit.template, submit.tools]
    for turn in submit.messages:
        parts += [turn.role, turn.content, turn.tool_calls]
    return "\x1f".join(parts)


def signature(submit: Submit) -> Signature:
    text = prompt_text(submit)
    chain, h = [], 0
    for start in range(0, min(len(text), BLOCK_CHARS * MAX_BLOCKS), BLOCK_CHARS):
        block = text[start:start + BLOCK_CHARS]
        if len(block) < BLOCK_CHARS:
            break  # a partial last block is still growing: the next turn will not repeat it
        h = hash((h, block))
        chain.append(h)
    return tuple(chain)


def shared_blocks(a: Signature, b: Signature) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixMemory:
    """The signatures a replica served recently (a few per slot, newest kept)."""

    def __init__(self, capacity: int) -> None:
        self._recent: deque[Signature] = deque(maxlen=max(capacity, 1))

    def remember(self, sig: Signature) -> None:
        if sig:
            self._recent.append(sig)

    def match(self, sig: Signature) -> int:
        if not sig:
            return 0
        best = max((shared_blocks(sig, old) for old in self._recent), default=0)
        return best if best >= MIN_MATCH_BLOCKS else 0
