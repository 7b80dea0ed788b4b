"""Secrets the configuration may leave out: the key that signs ElatoAI device tokens and the admin
token (the web pages and the admin API).

Each is generated once and kept in the data directory (mode 0600), so tokens stay valid across
restarts and ``make run`` works without configuration.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from voxgate.core.config import Settings


def with_generated_secrets(settings: Settings) -> Settings:
    server = settings.server
    update: dict[str, SecretStr] = {}
    if server.jwt_secret is None:
        update["jwt_secret"] = SecretStr(_read_or_create(settings.data_dir / "jwt_secret", 48))
    if server.admin_token is None:
        update["admin_token"] = SecretStr(_read_or_create(settings.data_dir / "admin_token", 24))
    if not update:
        return settings
    return settings.model_copy(update={"server": server.model_copy(update=update)})


def _read_or_create(path: Path, n_bytes: int) -> str:
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(n_bytes)
    # O_EXCL: if another process created it first, use theirs.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key
