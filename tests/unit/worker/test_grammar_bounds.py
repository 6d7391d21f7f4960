"""`format` schemas are bounded before llama.cpp parses their grammar: its parser recurses per
nested group in C (maxLength 200000 overflowed the runner's stack) and refuses a little past
1,000 nested groups."""

from __future__ import annotations

import json

import pytest

from herd.worker.engine.grammar import (MAX_GRAMMAR_NESTING, InvalidFormat, check_grammar,
                                        format_grammar)


def grammar(schema: object) -> str:
    return format_grammar(json.dumps(schema))


@pytest.mark.parametrize("schema, message", [
    ({"type": "string", "maxLength": 200000}, "maxLength"),
    ({"type": "string", "minLength": 10 ** 9}, "minLength"),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 100000}, "maxItems"),
    ({"type": "array", "minItems": -1}, "minItems"),
    ({"type": "string", "pattern": "^a{0,100000000}$"}, "pattern repeats"),
    ({"type": "string", "pattern": "^((a{0,40}){0,40})$"}, "pattern repeats"),
    ({"type": "string", "pattern": "^" + "a" * 5000 + "$"}, "pattern longer"),
    ({"$ref": "https://example.com/x.json"}, "local \\$ref"),
    ({"type": "object", "properties": {"a": {"type": "string", "maxLength": 10 ** 6}}},
     "maxLength"),
])
def test_a_schema_past_a_bound_is_refused(schema: object, message: str) -> None:
    with pytest.raises(InvalidFormat, match=message):
        grammar(schema)


def test_deep_and_large_schemas_are_refused() -> None:
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["items"] = {}
        node = node["items"]
    with pytest.raises(InvalidFormat, match="nested deeper"):
        grammar(deep)
    with pytest.raises(InvalidFormat, match="larger than"):
        grammar({"enum": ["x" * 100] * 2000})


def test_schemas_within_bounds_still_convert() -> None:
    assert "root" in grammar({"type": "string", "maxLength": 500})
    assert "root" in grammar({"type": "string", "pattern": "^[a-z]{1,20}@[a-z]{1,20}$"})
    assert "root" in grammar({"type": "object", "properties": {"name": {"type": "string"}},
                              "required": ["name"]})
    assert format_grammar("json")


def test_grammar_nesting_is_counted_outside_literals_and_classes() -> None:
    check_grammar('root ::= "(((((" [(] ' + "(" * 10 + '"x"' + ")" * 10)
    with pytest.raises(InvalidFormat, match="nested"):
        check_grammar("root ::= " + "(" * (MAX_GRAMMAR_NESTING + 1) + '"x"' +
                      ")" * (MAX_GRAMMAR_NESTING + 1))
