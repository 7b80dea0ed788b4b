"""The key that signs ElatoAI device tokens, when the configuration gives none.

Generated once and kept in the data directory (mode 0600), so tokens stay valid across restarts
and ``make run`` works without configuration.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from voxgate.core.config import Settings


def with_signing_key(settings: Settings) -> Settings:
    if settings.server.jwt_secret is not None:
        return settings
    path = settings.data_dir / "jwt_secret"
    key = _read_or_create(path)
    server = settings.server.model_copy(update={"jwt_secret": SecretStr(key)})
    return settings.model_copy(update={"server": server})


def _read_or_create(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: if another process created it first, use theirs.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key
