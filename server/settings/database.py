"""Where the ledger lives: `SWITCHYARD_DATABASE_URL` parsed once, and printed only redacted.

    (unset)                              SQLite at <SWITCHYARD_DATA_DIR>/ledger.db
    memory                               in memory: lost on restart (tests, throwaway runs)
    sqlite:///relative/path.db           SQLite, relative to the working directory
    sqlite:////absolute/path.db          SQLite, absolute
    postgresql://user[:password]@host[:port]/dbname[?sslmode=...]   (postgres:// too)

SQLite serves one process; PostgreSQL is the store several replicas share.
A password in the URL is used to connect and never printed: `redact` replaces
it with `***` wherever a URL is logged or named in an error.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SQLITE_FILE = "ledger.db"


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A parsed database URL."""

    kind: Literal["memory", "sqlite", "postgresql"]
    path: Path | None = None  # SQLite's file
    dsn: str = field(default="", repr=False)  # PostgreSQL's URL, password included

    @property
    def shown(self) -> str:
        """The target as logs and errors may name it (no password)."""
        if self.kind == "memory":
            return "memory (lost on restart)"
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        return redact(self.dsn)


def redact(url: str) -> str:
    """`url` with any password replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if _port(parts) else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def _port(parts: urllib.parse.SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def parse_database_url(url: str, data_dir: Path) -> DatabaseTarget:
    """Parse `url` (empty: the default SQLite file in `data_dir`); ValueError says what is wrong.

    The error's message never holds the password.
    """
    text = url.strip()
    if not text:
        return DatabaseTarget("sqlite", data_dir / SQLITE_FILE)
    if text == "memory":
        return DatabaseTarget("memory")
    scheme = text.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not text.startswith("sqlite:///") or len(text) <= len("sqlite:///"):
            raise ValueError(
                f"expected sqlite:///relative/path.db or sqlite:////absolute/path.db,"
                f" got {redact(text)!r}"
            )
        return DatabaseTarget("sqlite", Path(text[len("sqlite:///") :]))
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port
        except ValueError:
            raise ValueError(
                f"{redact(text)!r} is not a valid URL; expected postgresql://user@host:port/dbname"
            ) from None
        database = parts.path.lstrip("/")
        if not parts.hostname or not parts.username or not database or "/" in database:
            raise ValueError(
                f"expected postgresql://user[:password]@host[:port]/dbname, got {redact(text)!r}"
            )
        if port == 0:
            raise ValueError(f"the port of {redact(text)!r} must be from 1 to 65535")
        return DatabaseTarget("postgresql", dsn=text)
    raise ValueError(
        "expected memory, sqlite:///PATH or postgresql://user@host:port/dbname,"
        f" got {redact(text)!r}"
    )
