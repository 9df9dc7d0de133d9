# SPDX-License-Identifier: MIT OR Apache-2.0
"""One output path for every ``list``: ``-o table|wide|json|yaml`` and ``--no-headers``.

A command builds its *document* (plain dicts and lists, the same keys on every
run, ``null`` for a value that is absent) and the tables that show it;
:func:`emit` prints one or the other. JSON and YAML carry the document whole,
so a script reads fields by name and never parses a table; tables are for
people (columns separated by three or more spaces, ``-`` for an empty cell,
``-o wide`` adds the columns marked ``wide``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Union

FORMATS = ("table", "wide", "json", "yaml")


def add_output_args(p, formats: Sequence[str] = FORMATS) -> None:
    """``-o/--output`` and ``--no-headers`` on the parser ``p``."""
    what = {"table": "table (default)", "wide": "wide (a table with more columns)",
            "json": "json", "yaml": "yaml"}
    p.add_argument("-o", "--output", choices=tuple(formats), default="table",
                   help=", ".join(what[f] for f in formats) + "; json and yaml print the whole document, "
                   "with the same keys on every run, for scripts")
    if "table" in formats:
        p.add_argument("--no-headers", action="store_true", help="print tables without their header line")


@dataclass
class Column:
    header: str
    value: Union[str, Callable[[Any], Any]]  # a key of the row, or a function of the row
    wide: bool = False                       # only in -o wide

    def cell(self, row) -> str:
        v = row.get(self.value) if isinstance(self.value, str) else self.value(row)
        return "-" if v is None or v == "" else str(v)


@dataclass
class Table:
    columns: List[Column]
    rows: List[Any] = field(default_factory=list)

    def lines(self, wide: bool = False, headers: bool = True) -> List[str]:
        cols = [c for c in self.columns if wide or not c.wide]
        body = [[c.cell(r) for c in cols] for r in self.rows]
        grid = ([[c.header for c in cols]] if headers else []) + body
        if not grid:
            return []
        w = [max(len(r[i]) for r in grid) for i in range(len(cols))]
        return ["   ".join(x.ljust(w[i]) for i, x in enumerate(r)).rstrip() for r in grid]


def dumps(document: Any, fmt: str) -> str:
    """The document as JSON (indented) or YAML (block style, keys in document order)."""
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")
    return json.dumps(document, indent=2)


def emit(args, document: Any, *tables: Table, out=None) -> None:
    """Print ``document`` (json/yaml) or ``tables`` (table/wide; a blank line between two)."""
    out = out or sys.stdout
    fmt = getattr(args, "output", "table")
    if fmt in ("json", "yaml"):
        print(dumps(document, fmt), file=out)
        return
    headers = not getattr(args, "no_headers", False)
    blocks = ["\n".join(t.lines(wide=fmt == "wide", headers=headers)) for t in tables]
    text = "\n\n".join(b for b in blocks if b)
    if text:
        print(text, file=out)


def emit_fields(args, document: dict, lines: Optional[List[str]] = None, out=None) -> None:
    """For a single object (``status``): json/yaml print ``document``, a table prints ``lines``."""
    out = out or sys.stdout
    fmt = getattr(args, "output", "table")
    if fmt in ("json", "yaml"):
        print(dumps(document, fmt), file=out)
    else:
        for line in lines or ():
            print(line, file=out)
