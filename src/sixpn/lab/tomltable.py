"""TOML tables read with field paths: typed getters whose errors name where they are.

A topology's mistakes are told as ``<file>: orgs[0].machines[2].host: <what is wrong>``; an
unknown key is refused on sight (a misspelt optional key would otherwise be a silently ignored
setting), with the closest known key suggested.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from sixpn.core.names import validate_name
from sixpn.model.errors import InvalidInput


def kind(value: object) -> str:
    """How a TOML value is called in messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "an array"
    return "a table" if isinstance(value, dict) else f"a {type(value).__name__}"


def suggest(value: str, known: Iterable[str]) -> str:
    """ "did you mean 'x'? " when one known word is closest; nothing when several tie."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, value, k).ratio(), k) for k in known), reverse=True
    )
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return ""
    return f"did you mean {scored[0][1]!r}? "


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Table:
    """One TOML table being read: typed getters whose errors name the field path.

    Unknown keys are refused on sight: a misspelt optional key would otherwise be a silently
    ignored setting.
    """

    def __init__(self, source: str, path: str, data: object, keys: tuple[str, ...]) -> None:
        self.source, self.path = source, path
        if not isinstance(data, dict):
            raise self.fail("", f"must be a table, got {kind(data)}")
        self.data: dict[str, Any] = data
        for key in data:
            if key not in keys:
                raise self.fail(key, f"unknown key ({suggest(key, keys)}keys: {', '.join(keys)})")

    def where(self, key: str) -> str:
        return ".".join(p for p in (self.path, key) if p) or "(top level)"

    def fail(self, key: str, message: str) -> InvalidInput:
        where = self.where(key)
        return InvalidInput(f"{self.source}: {where}: {message}", field=where)

    def get(self, key: str, fits: Callable[[object], bool], what: str) -> Any:
        """The value at ``key`` if it fits (None if absent); else an error saying ``what``."""
        value = self.data.get(key)
        if value is not None and not fits(value):
            raise self.fail(key, f"must be {what}, got {kind(value)}")
        return value

    def text(self, key: str) -> str | None:
        value: str | None = self.get(key, lambda v: isinstance(v, str), "a string")
        return value

    def required(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.fail(key, "missing (a string)")
        return value

    def name(self, key: str, what: str, default: str | None = None) -> str:
        """The name at ``key``, checked by the project's name rules; required without default."""
        value = self.text(key)
        if value is None and default is not None:
            return default
        return self.check_name(key, self.required(key) if value is None else value, what)

    def check_name(self, key: str, value: str, what: str) -> str:
        try:
            return validate_name(value, field=key, what=what)
        except InvalidInput as exc:
            raise self.fail(key, exc.message) from None

    def tables(self, key: str, keys: tuple[str, ...]) -> list[Table]:
        path = self.where(key)
        header = ".".join(part.split("[")[0] for part in path.split("."))  # orgs.apps
        values = self.get(key, lambda v: isinstance(v, list), f"an array of tables ([[{header}]])")
        return [Table(self.source, f"{path}[{i}]", v, keys) for i, v in enumerate(values or [])]


def unique(
    table: Table, key: str, value: str, seen: dict[str, str], what: str, scope: str = ""
) -> None:
    if value in seen:
        raise table.fail(key, f"{what} {value!r} is declared twice{scope} (first at {seen[value]})")
    seen[value] = table.where(key)
