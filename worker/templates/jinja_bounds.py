"""A Jinja sandbox whose every render does bounded work: time, value sizes, integer sizes,
output, nesting.

Jinja's own sandbox keeps templates away from Python's internals, not from the machine: `'a' *
10**10`, `9 ** 9 ** 9`, a string doubled in a loop or `'x'|center(10**10)` each hold the runner
(which renders in its main loop, between engine steps) or exhaust its memory. A request may bring
its own template, so every operator, call, filter and attribute read checks what it is given and
what it makes, and a render past its deadline fails with the request's 400.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Sized
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from herd.protocol.templates.check import check_jinja_nesting


class TemplateError(ValueError):
    pass


MAX_VALUE_ITEMS = 16 << 20  # characters in a string, items in a list: the Go templates' output cap
MAX_OUTPUT_CHARS = 16 << 20
MAX_INT_BITS = 1 << 16  # ~20,000 decimal digits: more than any template computes
MAX_ARG_INT = 1_000_000  # a width, count or repeat handed to a call or a filter
MAX_RENDER_SECONDS = 2.0
# A width or precision of a million or more in a %-format or str.format string.
_WIDE_FORMAT = re.compile(r"\d{7,}")


def bounded(value: Any) -> Any:
    """`value` if it is small enough to keep, else the request's error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateError("template error: integer too large")
    elif (isinstance(value, (str, list, tuple, dict, set, frozenset))
          and len(value) > MAX_VALUE_ITEMS):
        raise TemplateError("template error: value too large")
    return value


def _check_args(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_ARG_INT:
            raise TemplateError(f"template error: argument {arg} too large")
        bounded(arg)


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise TemplateError("template error: format width too large")


def _check_product(left: Any, right: Any) -> None:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and n > 0:
            if len(seq) * n > MAX_VALUE_ITEMS:
                raise TemplateError("template error: value too large")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateError("template error: integer too large")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if base.bit_length() * min(exponent, MAX_INT_BITS + 1) > MAX_INT_BITS:
            raise TemplateError("template error: integer too large")


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b ~ …` compiles to one join of all its parts; the sandbox never sees it. Here it goes
    through the environment, which checks the size before joining."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_filter(fn: Any, env: BoundedEnvironment, check_format: bool) -> Any:
    @functools.wraps(fn)  # keeps jinja_pass_arg (pass_context, pass_environment)
    def call(*args: Any, **kwargs: Any) -> Any:
        env.tick()
        _check_args((*args, *kwargs.values()))
        if check_format and args:
            _check_format(next((a for a in args if isinstance(a, str)), None))
        return bounded(fn(*args, **kwargs))
    return call


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.deadline = float("inf")
        for name, fn in list(self.filters.items()):
            self.filters[name] = _bounded_filter(fn, self, check_format=name == "format")

    def add_filter(self, name: str, fn: Any) -> None:
        self.filters[name] = _bounded_filter(fn, self, check_format=False)

    def start_render(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError("template error: rendering took too long")

    def bounded_join(self, parts: Iterable[Any]) -> str:
        self.tick()
        texts = [str(p) for p in parts]
        if sum(len(t) for t in texts) > MAX_VALUE_ITEMS:
            raise TemplateError("template error: value too large")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        elif operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
            if len(left) + len(right) > MAX_VALUE_ITEMS:
                raise TemplateError("template error: value too large")
        return bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.tick()
        _check_args((*args, *kwargs.values()))
        return bounded(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.tick()
        if attribute in ("format", "format_map"):
            _check_format(obj)  # '{:099999999}'.format(1)
        return bounded(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.tick()
        return bounded(super().getitem(obj, argument))

    def check_nesting(self, source: str) -> None:
        """Jinja's parser and Python's compiler recurse once per bracket: refuse deep ones
        before either sees them."""
        try:
            check_jinja_nesting(self, source)
        except ValueError as e:
            raise TemplateError(str(e)) from e

    def render_bounded(self, template: Any, variables: dict[str, Any]) -> str:
        """The template's output, at most MAX_OUTPUT_CHARS, within the time budget."""
        self.start_render()
        out: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError("template error: output exceeds the limit")
            self.tick()
            out.append(chunk)
        return "".join(out)
