"""Speculative decoding through a real server: `options.draft_num_predict` reaches the runner,
and answers at temperature 0 (and seeded ones) are the same with speculation off (0), with
the default and with Ollama's default draft length of 4 (api/types.go, DefaultOptions)."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from support.herd_server import HerdServer

TEXT = ("The river town of Alder sits where two valleys meet. Every spring the snow melts on the "
        "northern ridge, the water rises over the old stone bridge, and the town council meets "
        "to argue about whether to build a new one. Nobody has ever agreed on the cost.")


def _answers(url: str, model: str, prompts: list[str], draft: int | None,
             **options) -> list[dict]:
    def one(prompt: str) -> dict:
        opts = {"temperature": 0, "num_predict": 64, **options}
        if draft is not None:
            opts["draft_num_predict"] = draft
        r = httpx.post(f"{url}/api/generate", json={"model": model, "prompt": prompt,
                                                    "stream": False, "options": opts})
        assert r.status_code == 200, r.text
        return r.json()

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:  # one decode for all
        return list(pool.map(one, prompts))


def _same(a: list[dict], b: list[dict]) -> None:
    assert [(x["response"], x["eval_count"], x["done_reason"]) for x in a] == \
        [(x["response"], x["eval_count"], x["done_reason"]) for x in b]


def test_tiny_model_answers_do_not_depend_on_drafts(make_server) -> None:
    srv = make_server(OLLAMA_NUM_PARALLEL="4")
    prompts = ["the sun the moon the sun the moon", "hello world hello world hello",
               "why is the sky blue", "yes no yes no yes no yes"]
    plain = _answers(srv.url, "tiny", prompts, 0)
    _same(_answers(srv.url, "tiny", prompts, None), plain)
    _same(_answers(srv.url, "tiny", prompts, 4), plain)
    seeded = _answers(srv.url, "tiny", prompts, 0, temperature=0.8, seed=3)
    _same(_answers(srv.url, "tiny", prompts, None, temperature=0.8, seed=3), seeded)


def test_option_type_is_checked(make_server) -> None:
    srv = make_server()
    r = httpx.post(f"{srv.url}/api/generate", json={
        "model": "tiny", "prompt": "hi", "options": {"draft_num_predict": "four"}})
    assert r.status_code == 400 and "draft_num_predict" in r.json()["error"]


@pytest.mark.smollm2
def test_smollm2_rewrite_is_the_same_with_drafts(tmp_path) -> None:
    prompts = [f"Repeat this text exactly:\n\n{TEXT}", "Why is the sky blue?"]
    with HerdServer(tmp_path, default_model="smollm2:135m") as srv:
        plain = _answers(srv.url, "smollm2:135m", prompts, 0, num_predict=96)
        _same(_answers(srv.url, "smollm2:135m", prompts, None, num_predict=96), plain)
        _same(_answers(srv.url, "smollm2:135m", prompts, 8, num_predict=96), plain)  # forced
        assert "Alder" in plain[0]["response"]


def _draft_metrics(url: str) -> dict[str, float]:
    """herd_draft_tokens_total by outcome, summed over models."""
    counts = {"accepted": 0.0, "rejected": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("herd_draft_tokens_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] += float(value)
    return counts


def test_metrics_count_the_drafted_tokens(make_server) -> None:
    srv = make_server()
    prompt = ["the sun the moon the sun the moon the sun the moon"]
    _answers(srv.url, "tiny", prompt, 0)
    assert _draft_metrics(srv.url) == {"accepted": 0.0, "rejected": 0.0}
    # Forced drafts: the prompt's last two tokens occurred before, so its first step drafts.
    _answers(srv.url, "tiny", prompt, 4)
    counts = _draft_metrics(srv.url)
    assert counts["accepted"] + counts["rejected"] >= 4
