"""Speculative decoding in the batching engine: a sequence's drafts (prompt lookup in ngrams, or
the runner's draft model in draft_model), whether they pay on this runner (odds), and how they
ride in a step and are verified (speculative)."""
