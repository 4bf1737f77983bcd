"""Idempotency keys: a client that lost the answer to a request can send it again with the same key and get the
first answer, instead of a second upload, job or comparison."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from appliance.db import Database
from appliance.errors import Conflict, InvalidRequest, KeyReused
from appliance.models import IdempotencyKey

log = logging.getLogger(__name__)

KEEP_FOR = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Answer:
    """The first answer to a request: what is sent again to a retry."""

    request_sha256: str
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


class IdempotencyKeys:
    """A key is claimed while its request runs, then holds the answer for KEEP_FOR. Only answers that changed
    something (2xx) are kept: a refusal changed nothing, so a retry simply runs again."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, user: str, key: str, operation: str) -> Answer | None:
        """None: the key is new and now held for this request. An Answer: the key's first answer, to be sent again
        if the request is the same (see ``check``). Conflict while the first request still runs; KeyReused when the
        key came with another operation."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise InvalidRequest(
                "invalid_idempotency_key", f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable ASCII characters"
            )
        now = datetime.now(UTC)
        with self.db.session() as session:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.created < now - KEEP_FOR))
            held = session.get(IdempotencyKey, (user, key))
            if held is None:
                session.add(IdempotencyKey(user=user, key=key, operation=operation, created=now))
                try:
                    session.flush()
                except IntegrityError:  # claimed between the read and the write
                    raise _in_progress(key) from None
                return None
            if held.operation != operation:
                raise KeyReused(
                    "idempotency_key_reused",
                    f"the Idempotency-Key {key!r} was used for another request: {held.operation}",
                )
            if held.status_code is None:
                raise _in_progress(key)
            return Answer(
                held.request_sha256 or "", held.status_code, [tuple(h) for h in held.headers or []], held.body or b""
            )

    @staticmethod
    def check(key: str, answer: Answer, request_sha256: str) -> None:
        """KeyReused unless the retry's body is the first request's."""
        if request_sha256 != answer.request_sha256:
            raise KeyReused(
                "idempotency_key_reused",
                f"the Idempotency-Key {key!r} was used with a different body: send a new key for a new request",
            )

    def keep(self, user: str, key: str, answer: Answer) -> None:
        with self.db.session() as session:
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.user == user, IdempotencyKey.key == key)
                .values(
                    request_sha256=answer.request_sha256,
                    status_code=answer.status_code,
                    headers=[list(h) for h in answer.headers],
                    body=answer.body,
                )
            )

    def release(self, user: str, key: str) -> None:
        with self.db.session() as session:
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.user == user, IdempotencyKey.key == key, IdempotencyKey.status_code.is_(None)
                )
            )

    def recover(self) -> int:
        """At start: no request is running, so claims a killed appliance left are released."""
        with self.db.session() as session:
            released = session.execute(delete(IdempotencyKey).where(IdempotencyKey.status_code.is_(None))).rowcount
        if released:
            log.info("idempotency keys released", extra={"count": released})
        return released


def _in_progress(key: str) -> Conflict:
    return Conflict(
        "idempotency_key_in_progress",
        f"a request with the Idempotency-Key {key!r} is still running: try again when it has answered",
    )
