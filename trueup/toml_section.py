"""Set keys of one ``[table]`` in TOML text and leave every other byte as it was.

:func:`set_keys` changes the value of each key that is already there (the key's spelling,
the spaces around ``=`` and the comment after the value stay) and adds the keys that are
not, after the table's last key. A missing table is appended at the end. The result is
parsed again and must equal the old document with only those keys changed: if it does not
(a table written as an inline table or with dotted keys, an unusual layout), nothing is
changed and :class:`~optimizer.errors.InputError` says so.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from optimizer.errors import InputError

_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*([^\[\]#]*?)[ \t]*\]\]?[ \t]*(#.*)?\r?$")


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, int or float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def _key_of(line: str) -> str | None:
    m = re.match(r"^[ \t]*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)[ \t]*=", line)
    return m.group(1).strip("\"'") if m else None


def _value_end(lines: list[str], i: int, eq: int) -> tuple[int, int]:
    """Where the value after the ``=`` at column ``eq`` of line ``i`` ends, as (line,
    column): the first cut before a ``#`` or at a line's end where it parses, trailing
    spaces left out. A value may run over several lines (arrays, multi-line strings)."""
    rest = ""
    for j in range(i, min(len(lines), i + 500)):
        body = lines[j].rstrip("\r\n")
        base = eq + 1 if j == i else 0
        if j > i:
            rest += "\n"
        origin = len(rest) - base  # where column 0 of line j would be in ``rest``
        rest += body[base:]
        cols = [m.start() for m in re.finditer("#", body) if m.start() >= base]
        for col in [*cols, len(body)]:
            value = rest[:origin + col]
            try:
                tomllib.loads("k =" + value)
            except tomllib.TOMLDecodeError:
                continue
            return j, len(value.rstrip()) - origin
    raise ValueError("no value")


def set_keys(text: str, table: str, values: dict[str, Any]) -> str:
    """``text`` with ``[table]``'s keys set to ``values``; see the module docstring."""
    lines = text.splitlines(keepends=True)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"  # the file's own
    headers = [(i, m.group(1).strip("\"'"), line.lstrip().startswith("[["))
               for i, line in enumerate(lines) if (m := _HEADER.match(line))]
    start = next((i for i, name, array in headers if name == table and not array), None)
    todo = dict(values)
    if start is None:
        add = "".join(f"{k} = {toml_value(v)}{nl}" for k, v in todo.items())
        sep = "" if not text else (nl if text.endswith("\n") else nl * 2)
        new = f"{text}{sep}[{table}]{nl}{add}"
    else:
        end = next((i for i, _, _ in headers if i > start), len(lines))
        last = start  # the table's last line that belongs to a key/value
        i = start + 1
        while i < end:
            key = _key_of(lines[i])
            if key is None:
                i += 1
                continue
            eq = lines[i].index("=")
            try:
                j, col = _value_end(lines, i, eq)
            except ValueError:
                raise _cannot(table, f"the value of {key} cannot be read") from None
            if key in todo:
                head, after = lines[i][:eq + 1], lines[i][eq + 1:]
                lead = after[:len(after) - len(after.lstrip(" \t"))] or " "
                value, tail = toml_value(todo.pop(key)), lines[j][col:]
                pad = len(tail) - len(tail.lstrip(" \t"))
                if j == i and pad and tail.lstrip(" \t").startswith("#"):
                    # keep the comment in its column when the line allows
                    old = col - eq - 1 - len(lead)
                    tail = " " * max(1, pad + old - len(value)) + tail.lstrip(" \t")
                lines[i:j + 1] = [f"{head}{lead}{value}{tail}"]
                end -= j - i
                j = i
            last = j
            i = j + 1
        if todo:
            if not lines[last].endswith("\n"):
                lines[last] += nl
            lines[last + 1:last + 1] = [f"{k} = {toml_value(v)}{nl}" for k, v in todo.items()]
        new = "".join(lines)
    _check(text, new, table, values)
    return new


def _cannot(table: str, why: str) -> InputError:
    return InputError(f"cannot edit [{table}] safely: {why}", where=f"[{table}]",
                      fix=f"write [{table}] as a plain table ([{table}] and one key = value "
                      "per line), or edit its keys by hand")


def _check(old: str, new: str, table: str, values: dict[str, Any]) -> None:
    try:
        before, after = tomllib.loads(old), tomllib.loads(new)
    except tomllib.TOMLDecodeError as e:
        raise _cannot(table, f"the result would not be valid TOML ({e})") from None
    expected = dict(before)
    section = expected.get(table, {})
    if not isinstance(section, dict):
        raise _cannot(table, f"{table} is not a table")
    expected[table] = {**section, **values}
    if after != expected:
        raise _cannot(table, "the file's layout is one this editor does not handle")
