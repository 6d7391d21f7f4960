"""The texts bench/suite.py sends: identical for every peer, built deterministically.

No llama.cpp import here: the suite's parent process never loads the model; token counts are
the ones each peer reports (prompt_eval_count, usage/timings) or the direct worker counts."""

from __future__ import annotations

_WHO = ["The harbour master", "A young engineer", "The old baker", "A travelling musician",
        "The village doctor", "A curious student", "The night watchman", "A retired sailor",
        "The head gardener", "A quiet librarian", "The station porter", "A stubborn farmer",
        "The court painter", "A wandering monk", "The river pilot", "A clever apprentice"]
_DID = ["repaired", "described", "painted", "measured", "carried", "inspected", "planted",
        "sketched", "catalogued", "questioned", "rebuilt", "polished", "guarded"]
_WHAT = ["a copper kettle", "the north bridge", "seven wooden crates", "an unfinished map",
         "the tallest chimney", "a box of letters", "the broken clock", "two stray goats",
         "a field of barley", "the signal lamp", "an iron gate"]
_WHEN = ["before sunrise", "during the storm", "after the market closed", "on a foggy morning",
         "late in the autumn", "while the bells rang", "at the end of winter"]

# Sentences per long prompt: ~12.3 gemma3 tokens each, so 41 of them plus the header make ~512.
LONG_PROMPT_SENTENCES = 41
# ~300 tokens of system prompt for the multi-turn chat.
SYSTEM_RULES = 12


def sentence(j: int) -> str:
    # Coprime-ish strides through the lists so consecutive sentences differ in every slot.
    return (f"{_WHO[j % len(_WHO)]} {_DID[(j * 5) % len(_DID)]} {_WHAT[(j * 7) % len(_WHAT)]} "
            f"{_WHEN[(j * 3) % len(_WHEN)]}.")


def long_prompt(trial: int) -> str:
    """~512-token raw prompt. The trial number comes first, so two trials share no cached
    prefix (every peer here reuses a KV prefix across requests)."""
    body = " ".join(sentence(trial * 101 + j) for j in range(LONG_PROMPT_SENTENCES))
    return f"Trial {trial}. Chronicle of the town, part {trial}.\n{body}\nContinue the chronicle:"


def system_prompt(run: int = 0) -> str:
    rules = "\n".join(f"{i + 1}. When asked about a place, remember that {sentence(run * 37 + i)}"
                      for i in range(SYSTEM_RULES))
    return (f"You are a concise assistant for the town archive (session {run}). Answer in one "
            f"short sentence. Follow these house notes:\n{rules}")


USER_TURNS = ["What is the capital of France?", "And what is the capital of Germany?",
              "Which of those two cities is larger?", "Name one river that flows through each."]


def embed_texts(n: int = 256) -> list[str]:
    return [sentence(j) for j in range(n)]
