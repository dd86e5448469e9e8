"""Where leapkd keeps files it derives on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "LEAPKD_CACHE"


def cache_dir() -> Path:
    """The cache directory: `$LEAPKD_CACHE` if set, else the platform's user cache dir.

    The directory is not created here; writers create it when they need it.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("leapkd"))
