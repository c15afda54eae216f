"""CSV input shared by the usage readers: the file's text, its rows, and numeric cells.

Nothing here knows a format's columns or units; the readers do.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from adapters.usage._problems import Problems, fail

PathLike = str | os.PathLike[str]
Rows = Iterator[tuple[int, list[str]]]


def read_text(path: PathLike) -> str:
    """The file's text (UTF-8, a BOM dropped), or a UsageError saying why not."""
    src = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail("file not found", src, "check the path") from None
    except OSError as e:
        raise fail(
            f"cannot read the file: {e.strerror or e}", src, "check the path and its permissions"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise fail(
            f"not UTF-8 text (byte 0x{raw[e.start]:02x})",
            f"{src}:{line}",
            "save the file as UTF-8 CSV",
        ) from None


def csv_rows(text: str, source: str = "the file") -> Rows:
    """CSV rows with the (1-based) line each ends on; blank rows skipped. A row the csv
    module cannot read (a cell over its 128 KiB limit, say) is a UsageError at its line."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise fail(f"not a CSV row: {e}", f"{source}:{reader.line_num}",
                       "a usage file holds short rows of numbers and times: check that this "
                       "is the right file, or remove the damaged row") from None
        if not cells or (not cells[0].strip() and all(not c.strip() for c in cells)):
            continue
        yield reader.line_num, cells


def header_and_rows(path: PathLike, empty_fix: str) -> tuple[int, list[str], Rows]:
    """The first row as the header (its line, its cells) and the rows after it.

    An empty file is a UsageError whose fix is ``empty_fix``.
    """
    rows = csv_rows(read_text(path), str(path))
    first = next(rows, None)
    if first is None:
        raise fail("the file is empty", str(path), empty_fix)
    hline, header = first
    return hline, header, rows


def rows_with_fields(
    rows: Iterable[tuple[int, list[str]]], probs: Problems, fields: int, *, exact: bool = False
) -> Rows:
    """The rows that have the fields the header needs; a problem for each row that has not.

    With ``exact`` a row must have exactly ``fields`` cells (one value per header column);
    otherwise at least ``fields`` (trailing optional columns may be left off). Stops when
    ``probs`` is full.
    """
    if exact:
        needs, fix = "the header has", "give every row one value per header column"
    else:
        needs, fix = "the header needs", "give every row the header's columns"
    for line, cells in rows:
        n = len(cells)
        if n == fields or (n > fields and not exact):
            yield line, cells
        elif probs.add(line, f"row has {n} fields; {needs} {fields}", fix):
            return


_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")


def parse_number(cell: str) -> float:
    """A finite float from a cell; ``1,234.5`` (thousands separators) accepted, ``1,5`` not.

    Raises ValueError whose text completes "<column> ...": ``is empty``, ``'x' is not a
    number``, ``'nan' is not a finite number``.
    """
    s = cell.strip()
    if not s:
        raise ValueError("is empty")
    if "," in s and _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{s!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{s!r} is not a finite number")
    return v


def is_number(cell: str) -> bool:
    """Whether :func:`parse_number` accepts the cell."""
    try:
        parse_number(cell)
    except ValueError:
        return False
    return True
