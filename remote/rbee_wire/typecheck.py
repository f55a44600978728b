"""Checks a decoded JSON message against its TypedDict, at run time.

The type hints are the definition; this reads them, so a message is checked
against exactly what producers and consumers are type-checked with. Only the
shapes JSON can carry are handled: str, int, float, bool, None, lists, dicts,
Literal, unions, and nested TypedDicts.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin


def problems(value: Any, schema: Any, where: str = "") -> list[str]:
    """What is wrong with `value` as a `schema` (a TypedDict or a type hint);
    an empty list when it fits."""
    if typing.is_typeddict(schema):
        return _typeddict_problems(value, schema, where)
    origin = get_origin(schema)
    if origin in (Required, NotRequired):
        return problems(value, get_args(schema)[0], where)
    if origin is Literal:
        return [] if value in get_args(schema) else [f"{where or 'value'}: {value!r} not allowed"]
    if origin in (Union, types.UnionType):
        options = [problems(value, option, where) for option in get_args(schema)]
        return [] if any(not found for found in options) else min(options, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where or 'value'}: expected a list, got {type(value).__name__}"]
        (item,) = get_args(schema) or (Any,)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where or 'value'}: expected an object"]
        item = (get_args(schema) or (str, Any))[1]
        return [p for k, v in value.items() for p in problems(v, item, f"{where}.{k}")]
    return _scalar_problems(value, schema, where)


def _scalar_problems(value: Any, schema: Any, where: str) -> list[str]:
    if schema is Any or schema is object:
        return []
    if schema is None or schema is type(None):
        return [] if value is None else [f"{where or 'value'}: expected null"]
    if schema is float:  # JSON has one number type: an int is a float too
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, schema)
    return [] if ok else [f"{where or 'value'}: expected {schema.__name__}, got {value!r}"]


def _required(schema: Any, hints: dict[str, Any]) -> list[str]:
    """Required keys, read from the hints: under `from __future__ import
    annotations` Python 3.11's own `__required_keys__` misses `NotRequired`."""
    keys = []
    for key, hint in hints.items():
        origin = get_origin(hint)
        if origin is Required or (origin is not NotRequired and key in schema.__required_keys__):
            keys.append(key)
    return keys


def _typeddict_problems(value: Any, schema: Any, where: str) -> list[str]:
    name = where or schema.__name__
    if not isinstance(value, dict):
        return [f"{name}: expected an object, got {type(value).__name__}"]
    hints = typing.get_type_hints(schema, include_extras=True)
    found = [f"{name}: missing {key!r}" for key in _required(schema, hints) if key not in value]
    found += [f"{name}: unexpected {key!r}" for key in value if key not in hints]
    for key, hint in hints.items():
        if key in value:
            found += problems(value[key], hint, f"{name}.{key}")
    return found
