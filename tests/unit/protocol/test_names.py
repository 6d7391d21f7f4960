"""gateway/names.py: Ollama model names, defaults, display form and validation (spec §0.6)."""

from __future__ import annotations

import pytest

from herd.protocol.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    InvalidName,
    ModelName,
    parse_name,
)


def test_bare_model_gets_default_host_namespace_and_tag() -> None:
    name = parse_name("llama3.2")
    assert name.parts() == ("registry.ollama.ai", "library", "llama3.2", "latest")
    assert name.full == "registry.ollama.ai/library/llama3.2:latest"
    assert (DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG) == ("registry.ollama.ai", "library", "latest")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b")),
        ("gemma3:270m-it-q4_K_M", ("registry.ollama.ai", "library", "gemma3", "270m-it-q4_K_M")),
        ("user/model", ("registry.ollama.ai", "user", "model", "latest")),
        ("user/model:tag", ("registry.ollama.ai", "user", "model", "tag")),
        ("example.com/user/model:tag", ("example.com", "user", "model", "tag")),
        ("registry.ollama.ai/library/llama3.2:latest", ("registry.ollama.ai", "library", "llama3.2", "latest")),
        ("https://example.com/user/model:tag", ("example.com", "user", "model", "tag")),
    ],
)
def test_parts_are_split_from_the_right(text: str, parts: tuple[str, str, str, str]) -> None:
    assert parse_name(text).parts() == parts


def test_host_may_carry_a_port_without_it_being_taken_for_a_tag() -> None:
    name = parse_name("localhost:5000/user/model")
    assert name.parts() == ("localhost:5000", "user", "model", "latest")
    tagged = parse_name("example.com:5000/user/model:v1")
    assert tagged.parts() == ("example.com:5000", "user", "model", "v1")


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("user/model:tag", "user/model:tag"),
        ("registry.ollama.ai/user/model:tag", "user/model:tag"),
        ("example.com/user/model:tag", "example.com/user/model:tag"),
        ("example.com/library/model:tag", "example.com/library/model:tag"),
        ("localhost:5000/user/model", "localhost:5000/user/model:latest"),
    ],
)
def test_display_is_the_shortest_form_and_always_has_a_tag(text: str, display: str) -> None:
    assert parse_name(text).display == display


def test_display_round_trips_through_parse() -> None:
    for text in ["llama3.2", "user/model:tag", "example.com:5000/user/model:tag"]:
        name = parse_name(text)
        assert parse_name(name.display) == name
        assert parse_name(name.full) == name


def test_names_are_frozen_values() -> None:
    assert parse_name("llama3.2") == ModelName("registry.ollama.ai", "library", "llama3.2", "latest")
    assert hash(parse_name("a:b")) == hash(parse_name("a:b"))


def test_parts_of_exactly_80_characters_are_valid() -> None:
    long = "m" * 80
    assert parse_name(f"{long}/{long}:{long}").parts() == (DEFAULT_HOST, long, long, long)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "bad name",
        "-model",
        "user/-model",
        "model:-tag",
        ".model",
        "my.org/model",  # '.' is not allowed in a namespace
        "model:",  # empty tag
        "user//model",
        "/model",
        "a/b/c/d",
        "model:t@g",
        "m" * 81,
        "user/" + "m" * 81,
        "n" * 81 + "/model",
        "model:" + "t" * 81,
        "h" * 351 + "/user/model",
    ],
)
def test_invalid_names_are_rejected(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(text)


def test_invalid_name_is_a_value_error() -> None:
    assert issubclass(InvalidName, ValueError)


@pytest.mark.parametrize("text", ["user\n/model", "model\n:tag", "host\n/user/model"])
def test_a_newline_inside_a_name_is_rejected(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(text)
