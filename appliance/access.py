"""Who may use the appliance: scripts with the API token, browsers with a session cookie got from the login key.

The API token is made once per home folder and kept in ``<home>/api-token`` (readable by its owner only), so a
notebook keeps working across restarts. The login key is new at every start, like Jupyter's: the launcher opens
``/login?key=...`` in the browser, which trades it for a session cookie. Sessions live in memory and end with the
process; both secrets are compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from pathlib import Path

TOKEN_PREFIX = "caesar_"


class Access:
    def __init__(self, token_path: Path, required: bool) -> None:
        self.token_path = token_path
        self.required = required
        self.login_key = secrets.token_urlsafe(32)
        self._token: str | None = None
        self._sessions: set[str] = set()
        self._lock = threading.Lock()

    @property
    def api_token(self) -> str:
        """The home folder's API token, made on first use."""
        if self._token is None:
            self._token = _read_or_create_token(self.token_path)
        return self._token

    def token_valid(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.api_token.encode())

    def login(self, key: str) -> str | None:
        """A new session id for the login key (or the API token, for a browser on another machine in lab mode)."""
        if not (hmac.compare_digest(key.encode(), self.login_key.encode()) or self.token_valid(key)):
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions.add(session)
        return session

    def session_valid(self, session: str) -> bool:
        with self._lock:
            return session in self._sessions

    def logout(self, session: str) -> None:
        with self._lock:
            self._sessions.discard(session)


def _read_or_create_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
        if token.startswith(TOKEN_PREFIX):
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    return token
