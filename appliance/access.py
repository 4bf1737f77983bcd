"""Who may use the appliance: scripts with the API token, browsers with a session cookie got from a login key.

The API token is made once per home folder and kept in ``<home>/api-token`` (readable by its owner only), so a
notebook keeps working across restarts. A login key opens one browser session, once: the launcher opens
``/login?key=...`` with a fresh key at start (as Jupyter does), the tray's *Open dashboard* and a second launch ask
for another. Keys and sessions live in memory and end with the process; secrets are compared in constant time and
never written to a log line."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

from appliance.logs import register_secret

TOKEN_PREFIX = "caesar_"
LOGIN_LINK_ROUTE = "/caesar/api/v1.0/login-link"  # where a running appliance hands out a new login link
MAX_PENDING_KEYS = 32  # keys handed out and not used yet; the oldest is dropped beyond


class Access:
    def __init__(self, token_path: Path, required: bool) -> None:
        self.token_path = token_path
        self.required = required
        self._token: str | None = None
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._sessions: set[str] = set()
        self._lock = threading.Lock()

    @property
    def api_token(self) -> str:
        """The home folder's API token, made on first use."""
        if self._token is None:
            self._token = _read_or_create_token(self.token_path)
            register_secret(self._token)
        return self._token

    def token_valid(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.api_token.encode())

    def new_login_key(self) -> str:
        """A key that logs one browser in, once."""
        key = secrets.token_urlsafe(32)
        register_secret(key)
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > MAX_PENDING_KEYS:
                self._keys.popitem(last=False)
        return key

    def login_link(self, base_url: str) -> str:
        """The dashboard's address, logging the browser in when a login is required."""
        if not self.required:
            return f"{base_url}/"
        return f"{base_url}/login?{urlencode({'key': self.new_login_key()})}"

    def login(self, key: str) -> str | None:
        """A new session id for a login key, which is used up (or for the API token, for a browser on another
        machine in lab mode); None for anything else."""
        with self._lock:
            known = next((k for k in self._keys if hmac.compare_digest(key.encode(), k.encode())), None)
            if known is not None:
                del self._keys[known]
        if known is None and not self.token_valid(key):
            return None
        session = secrets.token_urlsafe(32)
        register_secret(session)
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
