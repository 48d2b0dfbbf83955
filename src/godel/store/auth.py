"""The tables of ``godel.auth``: users, custom roles, API keys (users' and agents'), refresh tokens, and the
append-only, hash-chained audit log.

Rows come back as plain dicts (the auth layer owns their meaning); times are aware UTC datetimes. The audit log is
appended under the lock of its newest row: on PostgreSQL ``SELECT … FOR UPDATE`` of the last row serialises
appenders across servers, on SQLite the one writer already does, so each row's ``prev_hash`` is the hash of the row
before it and ``seq`` has no gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from godel.errors import ConflictError, NotFoundError
from godel.store import tables
from godel.store.host import StoreHost

GENESIS = "0" * 64  # the prev_hash of the first audit row


def _row(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class AuthQueries:
    """Mixed into ``SqlStore``."""

    # --- users ---
    async def create_user(self: StoreHost, user: Mapping[str, Any]) -> dict[str, Any]:
        t = tables.users
        async with self._write() as tx:
            exists = (await tx.conn.execute(sa.select(t.c.name).where(t.c.name == user["name"]))).first()
            if exists is not None:
                raise ConflictError(f"user {user['name']!r} already exists", details={"user": user["name"]})
            await tx.conn.execute(t.insert(), dict(user))
        return dict(user)

    async def get_user(self: StoreHost, name: str) -> dict[str, Any] | None:
        t = tables.users
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.name == name))).first()
        return _row(row) if row is not None else None

    async def user_by_subject(self: StoreHost, subject: str) -> dict[str, Any] | None:
        t = tables.users
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.oidc_subject == subject))).first()
        return _row(row) if row is not None else None

    async def list_users(self: StoreHost) -> list[dict[str, Any]]:
        t = tables.users
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(sa.select(t).order_by(t.c.name))]

    async def count_users(self: StoreHost) -> int:
        async with self._read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(tables.users))).scalar_one())

    async def update_user(self: StoreHost, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        t = tables.users
        async with self._write() as tx:
            result = await tx.conn.execute(t.update().where(t.c.name == name).values(**changes))
            if result.rowcount == 0:
                raise NotFoundError(f"user {name!r} not found", details={"user": name})
            row = (await tx.conn.execute(sa.select(t).where(t.c.name == name))).one()
        return _row(row)

    async def delete_user(self: StoreHost, name: str, at: datetime) -> None:
        """Remove a user: every key and session it had is revoked in the same transaction, and its row stays as a
        disabled tombstone with no role, no password and no SSO link, so that its name (which its agents, teams
        and webhooks are owned by) can never be given to someone else."""
        u = tables.users
        async with self._write() as tx:
            result = await tx.conn.execute(
                u.update()
                .where(u.c.name == name)
                .values(disabled=True, roles=[], password_hash=None, oidc_subject=None, updated_at=at)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"user {name!r} not found", details={"user": name})
            k = tables.api_keys
            await tx.conn.execute(
                k.update().where(k.c.user_name == name, k.c.revoked_at.is_(None)).values(revoked_at=at)
            )
            r = tables.refresh_tokens
            await tx.conn.execute(
                r.update().where(r.c.user_name == name, r.c.revoked_at.is_(None)).values(revoked_at=at)
            )

    # --- roles ---
    async def list_roles(self: StoreHost) -> list[dict[str, Any]]:
        t = tables.roles
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(sa.select(t).order_by(t.c.name))]

    async def upsert_role(self: StoreHost, role: Mapping[str, Any]) -> dict[str, Any]:
        t = tables.roles
        async with self._write() as tx:
            done = await tx.conn.execute(
                t.update()
                .where(t.c.name == role["name"])
                .values(permissions=role["permissions"], description=role.get("description"))
            )
            if done.rowcount == 0:
                await tx.conn.execute(t.insert(), dict(role))
            row = (await tx.conn.execute(sa.select(t).where(t.c.name == role["name"]))).one()
        return _row(row)

    async def delete_role(self: StoreHost, name: str) -> None:
        async with self._write() as tx:
            result = await tx.conn.execute(tables.roles.delete().where(tables.roles.c.name == name))
        if result.rowcount == 0:
            raise NotFoundError(f"role {name!r} not found", details={"role": name})

    # --- API keys and agent credentials ---
    async def create_api_key(self: StoreHost, key: Mapping[str, Any]) -> dict[str, Any]:
        async with self._write() as tx:
            await tx.conn.execute(tables.api_keys.insert(), dict(key))
        return dict(key)

    async def get_api_key(self: StoreHost, key_id: str) -> dict[str, Any] | None:
        t = tables.api_keys
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == key_id))).first()
        return _row(row) if row is not None else None

    async def list_api_keys(
        self: StoreHost, *, user_name: str | None = None, kind: str = "user", revoked: bool = False
    ) -> list[dict[str, Any]]:
        t = tables.api_keys
        stmt = sa.select(t).where(t.c.kind == kind).order_by(t.c.created_at, t.c.id)
        if user_name is not None:
            stmt = stmt.where(t.c.user_name == user_name)
        if not revoked:
            stmt = stmt.where(t.c.revoked_at.is_(None))
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(stmt)]

    async def revoke_api_keys(
        self: StoreHost, at: datetime, *, key_id: str | None = None, agent_id: str | None = None
    ) -> list[str]:
        """Revoke one key, or every live credential of an agent; returns the ids revoked."""
        t = tables.api_keys
        where: list[sa.ColumnElement[bool]] = [t.c.revoked_at.is_(None)]
        if key_id is not None:
            where.append(t.c.id == key_id)
        if agent_id is not None:
            where.append(t.c.agent_id == agent_id)
        # Read first: most calls (a run's first launch, an agent without a credential) find nothing to revoke, and
        # need not queue for the one writer. A key made after this read is newer than the revocation: left live.
        async with self._read() as conn:
            if (await conn.execute(sa.select(t.c.id).where(*where).limit(1))).first() is None:
                return []
        async with self._write() as tx:
            ids = [r[0] for r in await tx.conn.execute(sa.select(t.c.id).where(*where))]
            if ids:
                await tx.conn.execute(t.update().where(t.c.id.in_(ids)).values(revoked_at=at))
        return ids

    async def touch_api_keys(self: StoreHost, used: Mapping[str, datetime]) -> None:
        """Record when keys were last used (batched by the caller: not one write per request)."""
        if not used:
            return
        t = tables.api_keys
        async with self._write() as tx:
            for key_id, at in used.items():
                await tx.conn.execute(t.update().where(t.c.id == key_id).values(last_used_at=at))

    # --- refresh tokens ---
    async def add_refresh_token(self: StoreHost, token: Mapping[str, Any]) -> None:
        async with self._write() as tx:
            await tx.conn.execute(tables.refresh_tokens.insert(), dict(token))

    async def get_refresh_token(self: StoreHost, token_id: str) -> dict[str, Any] | None:
        t = tables.refresh_tokens
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == token_id))).first()
        return _row(row) if row is not None else None

    async def use_refresh_token(
        self: StoreHost, token_id: str, at: datetime, replacement: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Mark a refresh token used and store its replacement, in one transaction; returns the token's row as it
        was, or None when it does not exist. A token that was already used or revoked is not replaced: its whole
        family is revoked instead (a second use means a stolen copy), and the row is returned for the caller to
        refuse."""
        t = tables.refresh_tokens
        async with self._write() as tx:
            stmt = sa.select(t).where(t.c.id == token_id)
            if tx.conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = (await tx.conn.execute(stmt)).first()
            if row is None:
                return None
            found = _row(row)
            if found["used_at"] is not None or found["revoked_at"] is not None:
                await tx.conn.execute(
                    t.update().where(t.c.family == found["family"], t.c.revoked_at.is_(None)).values(revoked_at=at)
                )
                return found
            await tx.conn.execute(t.update().where(t.c.id == token_id).values(used_at=at))
            if replacement is not None:
                await tx.conn.execute(t.insert(), dict(replacement))
        return found

    async def revoke_user_sessions(self: StoreHost, name: str, at: datetime) -> None:
        """Close every session of a user (a password change, a disable): their refresh tokens, and with them the
        access tokens of those families."""
        t = tables.refresh_tokens
        async with self._write() as tx:
            await tx.conn.execute(
                t.update().where(t.c.user_name == name, t.c.revoked_at.is_(None)).values(revoked_at=at)
            )

    async def revoke_token_family(self: StoreHost, family: str, at: datetime) -> None:
        t = tables.refresh_tokens
        async with self._write() as tx:
            await tx.conn.execute(
                t.update().where(t.c.family == family, t.c.revoked_at.is_(None)).values(revoked_at=at)
            )

    async def revoked_families(self: StoreHost, families: Sequence[str]) -> set[str]:
        """Which of these token families were revoked (by logout, reuse or the user's removal)."""
        if not families:
            return set()
        t = tables.refresh_tokens
        async with self._read() as conn:
            result = await conn.execute(
                sa.select(t.c.family).where(t.c.family.in_(list(families)), t.c.revoked_at.is_not(None)).distinct()
            )
            return {r[0] for r in result}

    # --- audit log ---
    async def append_audit(
        self: StoreHost, entries: Sequence[Mapping[str, Any]], chain: Callable[[str, Mapping[str, Any]], str]
    ) -> list[dict[str, Any]]:
        """Append entries to the audit log; ``chain(prev_hash, row)`` computes each row's hash."""
        if not entries:
            return []
        t = tables.audit_log
        async with self._write() as tx:
            last = sa.select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)
            if tx.conn.dialect.name == "postgresql":
                # Serialise appenders of every server: whoever holds the lock extends the chain.
                await tx.conn.execute(sa.text("SELECT pg_advisory_xact_lock(7373001)"))
            head = (await tx.conn.execute(last)).first()
            seq, prev = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
            out = []
            for entry in entries:
                seq += 1
                row = {**entry, "seq": seq, "prev_hash": prev}
                row["hash"] = prev = chain(prev, row)
                out.append(row)
            await tx.conn.execute(t.insert(), out)
        return out

    async def audit_rows(
        self: StoreHost,
        *,
        after: int = 0,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        descending: bool = False,
    ) -> list[dict[str, Any]]:
        t = tables.audit_log
        stmt = sa.select(t)
        if after:
            stmt = stmt.where(t.c.seq < after if descending else t.c.seq > after)
        if actor:
            stmt = stmt.where(t.c.actor == actor)
        if action:
            stmt = stmt.where(t.c.action.like(action.replace("*", "%")))
        if since is not None:
            stmt = stmt.where(t.c.at >= since)
        stmt = stmt.order_by(t.c.seq.desc() if descending else t.c.seq).limit(limit)
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(stmt)]
