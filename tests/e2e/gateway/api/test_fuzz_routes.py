"""Generated JSON at every route of a real server: no 5xx, no hang, a healthy runner after.

Bodies are mostly shaped like the routes' requests (known field names, hostile templates,
schemas and option values mixed with arbitrary JSON), some arbitrary JSON, some not JSON at all.
The example count is fixed and the generation derandomized, so a run is reproducible and short.
"""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

ROUTES = [
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"),
    ("POST", "/api/embeddings"), ("POST", "/api/show"), ("POST", "/api/copy"),
    ("DELETE", "/api/delete"), ("POST", "/api/create"), ("POST", "/api/pull"),
    ("POST", "/api/push"), ("GET", "/api/tags"), ("GET", "/api/ps"), ("GET", "/api/version"),
    ("GET", "/"), ("HEAD", "/api/blobs/sha256:" + "0" * 64), ("POST", "/api/blobs/sha256:x"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"), ("GET", "/v1/models/tiny"), ("POST", "/v1/messages"),
    ("POST", "/v1/responses"), ("GET", "/metrics"), ("POST", "/api/tokenize"),
    ("POST", "/api/detokenize"), ("POST", "/api/rerank"), ("POST", "/v1/rerank"),
    ("GET", "/healthz"), ("GET", "/readyz"),
]
# Routes that change the store write only fuzz-owned names, so `tiny` outlives the run; pulls
# and pushes go to a closed local port, never to the internet.
WRITES = {"/api/copy", "/api/delete", "/api/create"}
TRANSFERS = {"/api/pull", "/api/push"}

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
models = (st.sampled_from(["tiny", "tiny:latest", "", "ghost", "a/b/c:d", "x" * 300])
          | st.text(max_size=10))
templates = st.sampled_from([
    "{{ .Prompt }}{{ 'ab' }}", "{{ .Prompt }}{{ 1e999 }}", "{{ " + "(" * 3000 + " }}",
    "{{ 'a' * 10**10 }}{% if 1 %}{% endif %}", "{% for m in messages %}{{ m.content }}{% endfor %}",
    "{{ .Prompt }}", "{{ if }}", "{% if %}", "{{" * 100]) | st.text(max_size=30)
schemas = st.sampled_from([
    "json", "", {"type": "string", "maxLength": 200000}, {"type": "object"},
    {"type": "string", "pattern": "^(a{0,99}){0,99}$"}, {"$ref": "#/nope"}]) | json_values
option_values = st.sampled_from([-3, -2, -1, 0, 1, 2, 2 ** 40, 1e300, -1e300, 0.5]) | scalars
options = st.dictionaries(st.sampled_from([
    "num_predict", "num_ctx", "num_batch", "num_thread", "temperature", "top_k", "top_p", "seed",
    "stop", "repeat_last_n", "num_keep", "min_p", "num_gpu", "mirostat"]), option_values,
    max_size=4)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant",
                                                                     "tool", "x"]) | json_values},
                                          optional={"content": st.text(max_size=20) | json_values,
                                                    "images": json_values,
                                                    "tool_calls": json_values}), max_size=3)
shaped = st.fixed_dictionaries({}, optional={
    "model": models, "prompt": st.text(max_size=20) | json_values, "messages": messages,
    "template": templates, "system": st.text(max_size=10), "format": schemas, "options": options,
    "stream": st.booleans() | json_values, "raw": st.booleans(), "suffix": st.text(max_size=5),
    "images": st.lists(st.sampled_from(["aGk=", "!!", ""]), max_size=40) | json_values,
    "context": st.lists(st.integers(-5, 10 ** 6), max_size=5) | json_values,
    "think": st.sampled_from([True, False, "high", "x"]) | json_values, "keep_alive": json_values,
    "input": json_values, "source": models, "destination": models, "from": models,
    "tools": json_values, "top_logprobs": st.integers(-5, 50), "logprobs": json_values,
    "max_tokens": json_values, "quantize": json_values, "parameters": json_values,
    "files": json_values, "truncate": json_values})
texts = st.text(max_size=20)
typed_options = st.dictionaries(st.sampled_from([
    "num_predict", "num_ctx", "num_batch", "num_thread", "temperature", "top_k", "top_p", "seed",
    "repeat_last_n", "num_keep", "min_p", "repeat_penalty"]),
    st.sampled_from([-3, -2, -1, 0, 1, 2, 64, 2 ** 40, 1e300, 0.5]), max_size=3)
turns = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                        "content": texts}), min_size=1, max_size=3)
# Well-formed requests with hostile parts: these reach the runner.
native_extras = {
    "template": templates, "format": schemas, "options": typed_options, "system": texts,
    "raw": st.booleans(), "stream": st.booleans(), "suffix": texts,
    "images": st.lists(st.sampled_from(["aGk=", "!!"]), max_size=40),
    "context": st.lists(st.integers(0, 300), max_size=5), "think": st.booleans(),
    "top_logprobs": st.integers(-2, 25), "logprobs": st.booleans(),
    "keep_alive": st.sampled_from(["5m", 0, -1, "x", 1e300])}
openai_extras = {
    "stream": st.booleans(), "temperature": st.floats(-5, 5), "seed": st.integers(-5, 2 ** 70),
    "stop": st.lists(texts, max_size=3), "logprobs": st.booleans(),
    "top_logprobs": st.integers(-2, 25),
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "x"}]) | json_values}
SHAPED = {
    "/api/generate": st.fixed_dictionaries({"model": st.just("tiny"), "prompt": texts},
                                           optional=native_extras),
    "/api/chat": st.fixed_dictionaries({"model": st.just("tiny"), "messages": turns},
                                       optional=native_extras),
    "/v1/chat/completions": st.fixed_dictionaries({"model": st.just("tiny"), "messages": turns},
                                                  optional=openai_extras),
    "/v1/completions": st.fixed_dictionaries({"model": st.just("tiny"), "prompt": texts},
                                             optional=openai_extras),
    "/v1/messages": st.fixed_dictionaries({"model": st.just("tiny"), "messages": turns},
                                          optional={"system": texts, "stream": st.booleans()}),
    "/v1/responses": st.fixed_dictionaries({"model": st.just("tiny"), "input": texts | turns},
                                           optional={"stream": st.booleans(),
                                                     "instructions": texts}),
    "/api/create": st.fixed_dictionaries({"model": st.just("fuzz"), "from": st.just("tiny")},
                                         optional={"template": templates, "system": texts,
                                                   "parameters": typed_options}),
    "/api/tokenize": st.fixed_dictionaries({"model": st.just("tiny"), "content": texts}),
    "/api/detokenize": st.fixed_dictionaries({"model": st.just("tiny"),
                                              "tokens": st.lists(st.integers(-5, 10 ** 6))}),
    "/api/embed": st.fixed_dictionaries({"model": st.just("tiny"),
                                         "input": texts | st.lists(texts)},
                                        optional={"options": typed_options}),
}
chaotic = (shaped.map(lambda b: json.dumps(b).encode())
           | json_values.map(lambda b: json.dumps(b).encode()) | st.binary(max_size=40))


def body_for(route: tuple[str, str]):
    shaped_route = SHAPED.get(route[1])
    if shaped_route is None:
        return chaotic
    encoded = shaped_route.map(lambda b: json.dumps(b).encode())
    # Most of them well-formed: those reach the runner
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda well_formed: encoded if well_formed else chaotic)


# Routes whose requests reach the runner count three times.
WEIGHTED = ROUTES + [route for route in ROUTES if route[1] in SHAPED] * 2
requests = st.sampled_from(WEIGHTED).flatmap(
    lambda route: st.tuples(st.just(route), body_for(route)))


def _tame(path: str, body: bytes) -> bytes:
    """Short generations (the fuzz is about input, not about decoding), fuzz-owned names for
    store writes, a closed port for transfers."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if not isinstance(value, dict):
        return body
    if path in WRITES:
        for key in ("model", "name", "destination"):
            if key in value:
                value[key] = f"fuzz-{abs(hash(json.dumps(value[key]))) % 100}"
    if path in TRANSFERS:
        value["model"] = "127.0.0.1:9/fuzz/model:latest"
        value["insecure"] = True
    opts = value.get("options")
    if isinstance(opts, dict) and isinstance(opts.get("num_predict"), (int, float)) and (
            opts["num_predict"] < -2 or opts["num_predict"] > 4):
        opts["num_predict"] = 2
    elif "options" not in value or not isinstance(opts, dict):
        value.setdefault("options", {"num_predict": 2})
    else:
        opts.setdefault("num_predict", 2)
    for key in ("max_tokens", "max_output_tokens"):
        value[key] = 2  # the Anthropic route requires it; the others take it
    return json.dumps(value).encode()


def _healthy(server) -> None:
    r = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert r.status_code == 200, r.text


def test_generated_requests_never_get_a_5xx_or_hang(server) -> None:
    _healthy(server)
    client = httpx.Client(base_url=server.url, timeout=60)

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests)
    def probe(request: tuple[tuple[str, str], bytes]) -> None:
        (method, path), body = request
        body = _tame(path, body)
        r = client.request(method, path, content=body,
                           headers={"Content-Type": "application/json"})
        text = r.text
        assert r.status_code < 500 or (path in TRANSFERS and r.status_code in (502, 503, 504)), (
            f"{method} {path} {body[:300]!r} → {r.status_code} {text[:300]}")
        assert "unexpectedly stopped" not in text, (path, body[:300], text[:300])

    try:
        probe()
    finally:
        client.close()
    _healthy(server)
    assert server.runner_pids()
