"""Named SQL statements, kept as SQL: `sql/queries/<area>.sql` holds blocks that each start with a
`-- name: <query_name>` line; `load(area)` gives them back as attributes.

    SQL = queries.load("runs")
    SQL.finish_run          # the text of the block named finish_run, for execute()

The numbered migrations (`sql/NNNN_name.sql`) are plain SQL files, not named blocks: `db.migrate`
sends their text as `migration_script(path)` returns it, the one other kind of statement text.

Files are read once per process and only when a module first asks for its area, so a command pays
only for the areas it uses. A name that is not in the file raises AttributeError naming the file,
so a typo fails at the first call in the tests, never silently.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_BLOCK = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def queries_dir() -> Path:
    """Return the folder of named queries: inside the installed package, or the checkout's sql/."""
    here = Path(__file__).resolve().parent
    installed = here / "sql" / "queries"
    return installed if installed.is_dir() else here.parent / "sql" / "queries"


class Queries:
    """The named statements of one area, as read-only attributes (their text, a `str`)."""

    __slots__ = ("_area", "_path", "_texts")

    def __init__(self, area: str, path: Path, texts: dict[str, str]) -> None:
        self._area, self._path, self._texts = area, path, texts

    def __getattr__(self, name: str) -> str:
        try:
            return self._texts[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {self._path}") from None

    def names(self) -> list[str]:
        return list(self._texts)


def parse(text: str, source: str = "<text>") -> dict[str, str]:
    """Return {name: statement} for the `-- name:` blocks of `text`; refuse duplicates and empties."""
    parts = _BLOCK.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        statement = body.strip()
        if name in found:
            raise ValueError(f"{source}: query {name!r} is defined twice")
        if not statement or all(line.lstrip().startswith("--") for line in statement.splitlines()):
            raise ValueError(f"{source}: query {name!r} has no statement")
        found[name] = statement.rstrip(";").rstrip()
    return found


@cache
def load(area: str) -> Queries:
    """Return the named statements of `sql/queries/<area>.sql`, read once per process."""
    path = queries_dir() / f"{area}.sql"
    return Queries(area, path, parse(path.read_text(encoding="utf-8"), str(path)))


def migration_script(path: Path) -> str:
    """Return the text of a numbered migration file (`NNNN_name.sql`), for db.migrate to run whole.

    Any other file name is refused: only the migrations folder's own files get here.
    """
    if not MIGRATION_FILE.match(path.name):
        raise ValueError(f"{path} is not a numbered migration file (NNNN_name.sql)")
    return path.read_text(encoding="utf-8")
