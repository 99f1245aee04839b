"""Checks for values read from a file that anyone may have written: each one says, in a phrase that completes a
sentence naming the file, where a value is and what it should have been.

A :data:`Check` takes a value and where it is (a chain of keys, formatted only when something is wrong) and
raises :class:`Invalid`; the combinators build checks of tables, lists and records from checks of their parts.
:func:`walk` visits every value of a nested object at a bounded cost. :mod:`mnistctl.checkfile` builds the
checkpoint format's schema from these.
"""

from __future__ import annotations

import math
import re
import reprlib
import typing
from collections.abc import Callable, Iterator
from typing import Any

MAX_DEPTH, MAX_VALUES = 32, 1_000_000  # how deep and how many the values of a loaded object may be
BIGGEST = 2**63  # no count or setting comes near it; a bigger int cannot even be turned into a float


class Invalid(Exception):
    """What makes a loaded object unusable: the end of a sentence that begins with the file's name."""


Where = tuple  # a chain of keys, (parent, key), formatted only when something is wrong
Check = Callable[[Any, Where], None]  # raises Invalid when the value at ``where`` is not what it should be
REQUIRED = object()  # a field's "default" when it must be there


def fail(value: Any, where: Where, expected: str) -> typing.NoReturn:
    raise Invalid(f"{place(where)} is {shown(value)}, not {expected}")


def is_number(value: Any) -> bool:
    """An int or float that arithmetic can use (bool is no number here; nor an int too long for a float)."""
    return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < BIGGEST)


def real(value: Any, where: Where) -> None:
    if not is_number(value):
        fail(value, where, "a number")


def number(above: float | None = None) -> Check:
    def check(value: Any, where: Where) -> None:
        real(value, where)
        if not math.isfinite(value) or (above is not None and value <= above):
            fail(value, where, "a finite number" + ("" if above is None else f" above {above:g}"))

    return check


def whole(low: int) -> Check:
    def check(value: Any, where: Where) -> None:
        if not (isinstance(value, int) and is_number(value) and value >= low):
            fail(value, where, f"a whole number from {low}")

    return check


def text(value: Any, where: Where) -> None:
    if not isinstance(value, str):
        fail(value, where, "text")


def sha256(value: Any, where: Where) -> None:
    if not (isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value)):
        fail(value, where, "a sha256 digest")


def anything(value: Any, where: Where) -> None:
    pass


def optional(check: Check) -> Check:
    return lambda value, where: None if value is None else check(value, where)


def table(keys: Check, values: Check) -> Check:
    def check(value: Any, where: Where) -> None:
        if not isinstance(value, dict):
            fail(value, where, "a table")
        for key, item in value.items():
            keys(key, (where, key))
            values(item, (where, key))

    return check


def items(check: Check) -> Check:
    def check_list(value: Any, where: Where) -> None:
        if not isinstance(value, list | tuple):
            fail(value, where, "a list")
        for i, item in enumerate(value):
            check(item, (where, i))

    return check_list


def record(fields: dict[str, Check], *, others: bool = False) -> Check:
    """A table with exactly these entries (and any ``others``)."""

    def check(value: Any, where: Where) -> None:
        if not isinstance(value, dict):
            fail(value, where, f"a table of {', '.join(fields)}")
        for name, field_check in fields.items():
            if name not in value:
                raise Invalid(f"{place((where, name))} is missing")
            field_check(value[name], (where, name))
        unknown = [key for key in value if key not in fields]
        if unknown and not others:
            raise Invalid(f"{place(where)} holds unknown entries: {', '.join(map(shown, unknown[:4]))}")

    return check


def tensor(dtype: str | None = None) -> Check:
    def check(value: Any, where: Where) -> None:
        import torch

        if not isinstance(value, torch.Tensor) or (dtype and str(value.dtype) != f"torch.{dtype}"):
            fail(value, where, f"a tensor of {dtype}" if dtype else "a tensor")

    return check


def walk(obj: Any, root: Where = ()) -> Iterator[tuple[Any, Where]]:
    """Every value in ``obj`` with where it is, each container once: a pickle can share a container many times,
    put it inside itself or nest thousands deep, and none of that may cost more than its size."""
    seen: set[int] = set()
    stack: list[tuple[Any, Where, int]] = [(obj, root, 0)]
    for _ in range(MAX_VALUES):
        if not stack:
            return
        value, where, depth = stack.pop()
        yield value, where
        if isinstance(value, dict | list | tuple) and id(value) not in seen:
            seen.add(id(value))
            if depth == MAX_DEPTH:
                raise Invalid(f"it is nested deeper than any checkpoint ({MAX_DEPTH} levels)")
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, (where, key), depth + 1) for key, item in pairs)
    raise Invalid(f"it holds more values than any checkpoint ({MAX_VALUES:,})")


def place(where: Where) -> str:
    """``((((), 'optimizer'), 'state'), 0)`` as ``optimizer['state'][0]``."""
    keys: list[Any] = []
    while where:
        where, key = where
        keys.append(key)
    if not keys:
        return "it"
    name, *rest = reversed(keys)
    return str(name) + "".join(f"[{shown(key)}]" for key in rest)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist = 60, 60, 4


def shown(value: Any) -> str:
    """``value`` as a few characters of an error line."""
    if type(value).__module__.startswith("torch") and hasattr(value, "shape"):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    try:
        return _REPR.repr(value)
    except ValueError:  # an int of more digits than Python turns into text
        return f"a {type(value).__name__} too long to show"
