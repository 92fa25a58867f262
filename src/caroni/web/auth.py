"""Users, passwords, browser sessions and API tokens of one node's site.

Everything here is plain synchronous code on a SQLAlchemy connection, so it runs
on the node's database thread (pages) or in the ``caroni user`` command alike.

- Passwords: scrypt (stdlib) with a random salt per user; the parameters are
  stored with the hash so they can be raised later without breaking old hashes.
- Sessions: a random token in the cookie, its SHA-256 in ``web_sessions`` (so a
  stolen database does not hand out live sessions); each session has its own
  CSRF token that every form posts back.
- API tokens: random, shown once, stored as SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from caroni.errors import CaroniError
from caroni.store.tables import api_tokens, users, web_sessions

if TYPE_CHECKING:
    from caroni.node.runtime import Node


class NodeLike(Protocol):
    """A started ManagerNode or AgentNode (what ``put_user`` needs of it)."""

    node: Node
    engine: Engine


SESSION_SECONDS = 24 * 3600
API_TOKEN_PREFIX = "caroni_"
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

# scrypt cost: ~16 MiB and a few tens of milliseconds per check.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LEN = 32


class UserError(CaroniError):
    """A user cannot be added or changed as asked (bad name, exists, unknown)."""


# --- passwords -------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A self-describing salted scrypt hash: ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_login(stored_hash: str | None, password: str) -> bool:
    if stored_hash is None:
        # Check against something all the same, so that "no such user" and
        # "wrong password" take the same time.
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, stored_hash)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=length
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- users -----------------------------------------------------------------------------


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise UserError(
            f"{username!r} is not a user name (1-64 letters, digits, '_', '.', '@', '-')"
        )
    return username


def add_user(conn: Connection, username: str, password_hash: str) -> None:
    check_username(username)
    if password_hash_of(conn, username) is not None:
        raise UserError(f"user {username!r} exists already")
    conn.execute(
        insert(users).values(username=username, password_hash=password_hash, created_at=time.time())
    )


def set_password(conn: Connection, username: str, password_hash: str) -> None:
    result = conn.execute(
        update(users).where(users.c.username == username).values(password_hash=password_hash)
    )
    if result.rowcount != 1:
        raise UserError(f"no user {username!r}")
    # A new password ends every session of the old one.
    conn.execute(delete(web_sessions).where(web_sessions.c.username == username))


def remove_user(conn: Connection, username: str) -> None:
    result = conn.execute(delete(users).where(users.c.username == username))
    if result.rowcount != 1:
        raise UserError(f"no user {username!r}")
    conn.execute(delete(web_sessions).where(web_sessions.c.username == username))
    conn.execute(delete(api_tokens).where(api_tokens.c.username == username))


def password_hash_of(conn: Connection, username: str) -> str | None:
    query = select(users.c.password_hash).where(users.c.username == username)
    return conn.execute(query).scalar_one_or_none()


def usernames(conn: Connection) -> list[str]:
    return list(conn.execute(select(users.c.username).order_by(users.c.username)).scalars())


def user_count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(users)).scalar_one()


# --- sessions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    username: str
    csrf: str


def new_session(conn: Connection, username: str, now: float | None = None) -> tuple[str, Session]:
    """Start a session; returns the cookie token (kept nowhere else) and the session."""
    now = time.time() if now is None else now
    conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
    token = secrets.token_urlsafe(32)
    session = Session(username=username, csrf=secrets.token_urlsafe(32))
    conn.execute(
        insert(web_sessions).values(
            token_hash=token_hash(token),
            username=username,
            csrf=session.csrf,
            created_at=now,
            expires_at=now + SESSION_SECONDS,
        )
    )
    return token, session


def session_for(conn: Connection, token: str, now: float | None = None) -> Session | None:
    now = time.time() if now is None else now
    row = conn.execute(
        select(web_sessions.c.username, web_sessions.c.csrf).where(
            web_sessions.c.token_hash == token_hash(token), web_sessions.c.expires_at > now
        )
    ).first()
    return None if row is None else Session(username=row.username, csrf=row.csrf)


def end_session(conn: Connection, token: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash(token)))


# --- API tokens --------------------------------------------------------------------------


def new_api_token(conn: Connection, username: str) -> str:
    """A new token for ``username``; only its hash is stored, so show it now or never."""
    if password_hash_of(conn, username) is None:
        raise UserError(f"no user {username!r}")
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        insert(api_tokens).values(
            token_hash=token_hash(token), username=username, created_at=time.time()
        )
    )
    return token


def user_for_api_token(conn: Connection, token: str) -> str | None:
    digest = token_hash(token)
    username = conn.execute(
        select(api_tokens.c.username).where(api_tokens.c.token_hash == digest)
    ).scalar_one_or_none()
    if username is not None:
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.token_hash == digest)
            .values(last_used_at=time.time())
        )
    return username


async def put_user(service: NodeLike, username: str, password: str) -> None:
    """Add a user to a running node, or set the password of an existing one (the demo)."""
    password_hash = await asyncio.to_thread(hash_password, password)

    def write(engine: Engine) -> None:
        with engine.begin() as conn:
            if password_hash_of(conn, username) is None:
                add_user(conn, username, password_hash)
            else:
                set_password(conn, username, password_hash)

    await service.node.db(write, service.engine)
