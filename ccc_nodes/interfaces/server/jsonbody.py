"""Request bodies as strict JSON: what a client sends may be stored (queue, history,
settings) and sent back, so it must be JSON that every later answer can serialise.

Python's ``json`` accepts ``NaN``, ``Infinity`` and numbers that overflow to infinity, which
JSON does not allow and which the answers (Starlette refuses them) could not send back;
deeply nested values overflow the recursion of copying and encoding later. Both are
refused when the body is read, with a message that says where.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "BodyError", "json_problem", "parse_json"]

MAX_DEPTH = 100  # nesting of objects and arrays; a ComfyUI workflow needs about 10


class BodyError(ValueError):
    """A request body that is not strict JSON; the message says why."""


_SCALARS = (str, int, bool, type(None))


def _strict(value: Any, max_depth: int) -> bool:
    """Fast check: strict JSON within ``max_depth`` (the common case, no paths kept)."""
    stack = [(value, 0)] if type(value) in (dict, list) else []
    if not stack:
        return type(value) in _SCALARS or (type(value) is float and math.isfinite(value))
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:
            return False
        if type(item) is dict:
            if not all(type(k) is str for k in item):
                return False
            children = item.values()
        else:
            children = item
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is float:
                if not math.isfinite(child):
                    return False
            elif kind not in _SCALARS:
                return False
    return True


def json_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` is not strict JSON (a non-finite number, a non-JSON type, a non-string
    key, nesting deeper than ``max_depth``), naming where; ``None`` when it is."""
    if _strict(value, max_depth):
        return None
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= max_depth:
                parts = where.split("/")
                where = "/".join(parts[:6]) + ("/..." if len(parts) > 6 else "") or "the body"
                return f"{where} is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"{where or 'the body'} has a key of type {type(key).__name__}, not a string"
                    stack.append((child, f"{where}/{key}", depth + 1))
            else:
                stack.extend((child, f"{where}/{i}", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where or 'the body'} is {item}, not a finite number"
        elif type(item) not in _SCALARS:
            return f"{where or 'the body'} is a {type(item).__name__}, not a JSON value"
    return None


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body as strict JSON; raises :class:`BodyError` saying why not."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BodyError(f"the body is nested more than {max_depth} levels deep") from None
    except ValueError as e:  # also JSONDecodeError, UnicodeDecodeError and over-long integers
        raise BodyError(str(e)) from None
    problem = json_problem(value, max_depth)
    if problem is not None:
        raise BodyError(problem)
    return value
