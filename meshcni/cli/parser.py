# SPDX-License-Identifier: MIT OR Apache-2.0
"""argparse with three things it lacks: hidden commands, hidden flag aliases, plain-text help.

- ``sub.add_parser(name, hidden=True)`` (or ``help=argparse.SUPPRESS``) parses
  but is not listed: not in the command list, not in ``{a,b,c}``, not in the
  "invalid choice" message. Python 3.11's argparse prints ``==SUPPRESS==`` and
  lists the name for a suppressed sub-command; old spellings kept for scripts
  must not crowd the help.
- ``sub.add_parser(name, hidden_aliases=("old",))``: ``old`` parses as ``name``.
- ``flag(p, "--bpf-root", "--root", ...)``: one name per setting in the help,
  older spellings accepted and mentioned once.
- Help is plain text: reST markup from module docstrings (````x````,
  ``:func:`x```) is printed as ``x``.

Every parser under :func:`meshcni.cli.build_parser` is a :class:`Parser`
(sub-parsers inherit their parent's class), including those that
``agent/cli.py``, ``sim/cli.py`` and the others add.
"""
from __future__ import annotations

import argparse
import re

_REST = re.compile(r"``([^`]+)``|:(?:func|class|meth|mod|attr|data|exc):`~?([^`]+)`|`([^`\n]+)`")


def plain(text: str) -> str:
    """reST inline markup -> plain text (the terminal shows no markup)."""
    return _REST.sub(lambda m: next(g for g in m.groups() if g is not None), text)


class SubParsers(argparse._SubParsersAction):
    """Sub-commands, some of them hidden (older spellings kept as aliases)."""

    def __init__(self, *args, **kwargs):
        self.hidden: set = set()
        super().__init__(*args, **kwargs)

    @property
    def metavar(self):
        if self._metavar is not None:
            return self._metavar
        return "{" + ",".join(self.visible()) + "}"

    @metavar.setter
    def metavar(self, value):
        self._metavar = value

    def add_parser(self, name, *, hidden: bool = False, hidden_aliases=(), **kwargs):
        if hidden or kwargs.get("help") is argparse.SUPPRESS:
            kwargs.pop("help", None)  # no help -> argparse adds no line for it
            self.hidden.add(name)
        p = super().add_parser(name, **kwargs)
        for alias in hidden_aliases:
            if alias in self._name_parser_map:
                raise argparse.ArgumentError(self, f"conflicting subparser alias: {alias}")
            self._name_parser_map[alias] = p
            self.hidden.add(alias)
        return p

    def visible(self):
        return [n for n in self._name_parser_map if n not in self.hidden]


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", SubParsers)

    def format_help(self) -> str:
        return plain(super().format_help())

    def format_usage(self) -> str:
        return plain(super().format_usage())

    def _check_value(self, action, value):
        if isinstance(action, SubParsers) and value not in action.choices:
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r} (choose from {', '.join(map(repr, action.visible()))})")
        return super()._check_value(action, value)


_SHARED = ("action", "type", "choices", "nargs", "metavar", "const")


def flag(p, name: str, *aliases: str, **kwargs) -> argparse.Action:
    """``p.add_argument(name, **kwargs)`` plus hidden ``aliases`` that set the same value.

    The help names the aliases once ("also --root") so a reader of an old
    script finds the setting.
    """
    if aliases and kwargs.get("help") is not argparse.SUPPRESS:
        kwargs["help"] = ((kwargs.get("help") or "").rstrip() + f" (also {', '.join(aliases)})").lstrip()
    act = p.add_argument(name, **kwargs)
    for a in aliases:
        p.add_argument(a, dest=act.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                       **{k: v for k, v in kwargs.items() if k in _SHARED})
    return act


def walk(parser: argparse.ArgumentParser, path=()):
    """Yield ``(path, parser, hidden)`` for ``parser`` and every sub-command under it, each once.

    ``hidden`` is True for a command reached only through a hidden name.
    """
    seen = set()

    def go(p, path, hidden):
        if id(p) in seen:
            return
        seen.add(id(p))
        yield path, p, hidden
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                hid = getattr(a, "hidden", set())
                # visible names first, so a parser reachable both ways is reported as visible
                for name in sorted(a.choices, key=lambda n: n in hid):
                    yield from go(a.choices[name], path + (name,), hidden or name in hid)

    yield from go(parser, tuple(path), False)
