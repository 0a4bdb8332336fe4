"""Metadata filters (`where`) as SQL over the catalog's JSON metadata column.

Every value is a bound parameter, never SQL text; a filter SQLite could not run (an empty
condition, an integer past 64 bits, a list where a scalar belongs) is a ValueError naming the
field, before any query runs.
"""
from __future__ import annotations

from typing import Any

_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def compile_where(where: dict[str, Any]) -> tuple[str, list[Any]]:
    """A metadata filter as SQL over the JSON column.

    `{"lang": "en"}` is equality; a dict value holds operators: $eq $ne $gt $gte $lt $lte $in
    $nin $exists; several keys are all required (AND).

    >>> compile_where({"year": {"$gte": 2020}})
    ('json_extract(metadata, ?) >= ?', ['$."year"', 2020])
    """
    if not isinstance(where, dict) or not where:
        raise ValueError("where must be a non-empty dict like {'field': value} or {'field': {'$gte': 3}}")
    parts: list[str] = []
    params: list[Any] = []
    for key, cond in where.items():
        if not isinstance(key, str):
            raise ValueError(f"where keys are metadata field names (str), got {key!r}")
        path = '$."' + key.replace('"', '\\"') + '"'
        field = "json_extract(metadata, ?)"
        conds = cond if isinstance(cond, dict) else {"$eq": cond}
        if not conds:
            raise ValueError(f"where[{key!r}] is an empty dict: give a value, or operators like {{'$gte': 3}}")
        for op, value in conds.items():
            if op in _OPS:
                if value is None and op in ("$eq", "$ne"):
                    parts.append(f"{field} IS {'NOT ' if op == '$ne' else ''}NULL")
                    params.append(path)
                    continue
                _check_scalar(key, value)
                parts.append(f"{field} {_OPS[op]} ?")
                params += [path, value]
            elif op in ("$in", "$nin"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"where[{key!r}][{op!r}] needs a non-empty list")
                for v in value:
                    _check_scalar(key, v)
                neg = "NOT " if op == "$nin" else ""
                parts.append(f"{field} {neg}IN ({','.join('?' * len(value))})")
                params += [path, *value]
            elif op == "$exists":
                parts.append(f"{field} IS {'NOT ' if value else ''}NULL")
                params.append(path)
            else:
                raise ValueError(f"unknown operator {op!r} in where[{key!r}]: use $eq $ne $gt $gte $lt $lte $in $nin $exists")
    return " AND ".join(parts), params


def _check_scalar(key: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"where[{key!r}] compares against a string, number or bool, got {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError(f"where[{key!r}]: {value} does not fit in 64 bits, the widest integer metadata holds")
