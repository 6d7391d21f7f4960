"""Drafting policies compared without the machine's noise: every workload of bench/speculative.py
decoded off, with drafts where they pay (-1, "auto") and forced (7), each step charged what a
step of its shape costs in a table measured once at the start (bench/speculative.py's probe:
one sequence's decode of 1..8 tokens, the least of 15 tries) instead of its own wall time.

On this shared 2-core machine two runs of the same mode differ by 5-15 %, as much as the
policy changes being weighed; the decoded tokens and the steps they take do not (greedy and
seeded answers are the same in every mode), so charging each step from one table makes the
ratios repeatable and isolates what the policy decides. `auto` decides on the same table (its
DraftCost is given it, not measured), so it sees what a runner that had measured these shapes
would. What the table leaves out (Python's time per step, cache effects) is bench/speculative.py's
part: both are reported in bench/RESULTS.md.

    .venv/bin/python bench/draft_policy.py [--model-path PATH] [--tokens 120] [--table MS,...]
"""

from __future__ import annotations

import argparse
import sys

import speculative as bench  # bench/speculative.py, beside this file

from herd.protocol.wire import RunnerSpec
from herd.worker.engine.drafting import odds
from herd.worker.runner import load_engine

MODES = {"off": 0, "auto": -1, "forced": 7}


class TableCost(odds.DraftCost):
    """A DraftCost whose step times are the table's and that charges each clean step."""

    def __init__(self, table_ms: list[float]) -> None:
        super().__init__()
        self.table = table_ms
        self.step_cost = {(1, d): ms / table_ms[0] for d, ms in enumerate(table_ms)}
        self.step_cost[(1, 0)] = table_ms[0] * 1e6
        self.charged_ms = 0.0
        self._pending = -1

    def started(self, seqs: int, drafted: int, clean: bool, spent_ns: int = 0) -> None:
        self._pending = drafted if clean and seqs == 1 else -1

    def decoded(self, now: int) -> None:
        if self._pending >= 0:
            self.charged_ms += self.table[self._pending]
        self._pending = -1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", default=str(bench.DEFAULT_MODEL))
    ap.add_argument("--tokens", type=int, default=120)
    ap.add_argument("--table", default="", help="ms of a decode of 1..8 tokens (default: probe)")
    args = ap.parse_args()
    spec = RunnerSpec(key="bench", model_digest="", num_ctx=2048, num_parallel=1)
    _, engine = load_engine(spec, lambda *_: None, args.model_path)
    table = ([float(x) for x in args.table.split(",")] if args.table
             else bench.probe(engine, list(range(1, 9)), repeats=15))
    cost = TableCost(table)
    bench.speculative._engine(engine).cost = cost  # the engine's drafting state, made early
    run = bench.Run(engine, args.tokens)
    print(f"# bench/draft_policy.py, {args.tokens} tokens, table (ms, 1..8 tokens): "
          + ", ".join(f"{ms:.1f}" for ms in table))
    print("| workload | kind | off ms | auto ms | auto/off | forced ms | forced/off "
          "| steps off / auto / forced |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (kind, message, options) in bench.WORKLOADS.items():
        charged, steps = {}, {}
        for mode, draft in MODES.items():
            cost.charged_ms = 0.0
            _, _, _, steps[mode], _, _ = run.one(message, options, draft)
            charged[mode] = cost.charged_ms
        off = charged["off"]
        print(f"| {name} | {kind} | {off:.0f} | {charged['auto']:.0f} | "
              f"{off / charged['auto']:.2f}x | {charged['forced']:.0f} | "
              f"{off / charged['forced']:.2f}x | "
              f"{steps['off']} / {steps['auto']} / {steps['forced']} |")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
