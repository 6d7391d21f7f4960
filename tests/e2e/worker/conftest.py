from __future__ import annotations

import llama_cpp as L
import pytest


@pytest.fixture
def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, bool]]]:
    """Every llama_decode's batch as [(seq id, logits asked)], the real decode still called."""
    batches: list[list[tuple[int, bool]]] = []
    decode = L.llama_decode

    def recording(ctx, batch):  # type: ignore[no-untyped-def]
        batches.append([(int(batch.seq_id[i][0]), bool(batch.logits[i]))
                        for i in range(batch.n_tokens)])
        return decode(ctx, batch)

    monkeypatch.setattr(L, "llama_decode", recording)
    return batches
