"""Tenants and keys in the ledger's SQL database (migration 0003), shared by replicas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from server.domain import TenantPolicy
from server.errors import AlreadyExistsError, DirectoryUnavailableError
from server.keys import ApiKey
from server.state.directory import Tenant
from server.state.memory.directory import identity_taken, no_key, no_tenant, tenant_exists
from server.state.sql.database import Database

_TENANT = (
    "SELECT name, day_budget_nanos, month_budget_nanos, rpm, tpm, models, labels, created_at_us"
    " FROM tenants"
)
_KEY = (
    "SELECT key_id, tenant, name, secret_hash, previous_hash, previous_until_us, expires_at_us,"
    " revoked_at_us, admin, created_at_us, rotated_at_us FROM api_keys"
)


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _s(microseconds: int | None) -> float | None:
    return None if microseconds is None else microseconds / 1_000_000


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        row[0], row[1], row[2], row[3], row[4], _s(row[5]), _s(row[6]), _s(row[7]),
        bool(row[8]), row[9] / 1_000_000, _s(row[10]),
    )  # fmt: skip


class SqlDirectory:
    """The directory on the ledger's database (the same connections, the same file)."""

    __slots__ = ("_db",)

    def __init__(self, database: Database) -> None:
        self._db = database

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            await self._db.connect()
            return await self._db.query(sql, args)
        except Exception as error:
            raise _unavailable(error) from None

    async def _transact(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        try:
            await self._db.connect()
            return await self._db.transact(statements)
        except Exception as error:
            if _duplicate(error):
                raise AlreadyExistsError(
                    "a name or identity of this change was just taken by another change;"
                    " list them and retry"
                ) from None
            raise _unavailable(error) from None

    async def create_tenant(self, tenant: Tenant) -> None:
        """Add a tenant and bind its identities."""
        if await self.tenant(tenant.name) is not None:
            raise tenant_exists(tenant.name)
        await self._check_identities(tenant)
        try:
            await self._transact([_insert_tenant(tenant), *_bind(tenant)])
        except AlreadyExistsError:  # another replica got there first: say with what
            await self._check_identities(tenant)
            raise tenant_exists(tenant.name) from None

    async def _check_identities(self, tenant: Tenant) -> None:
        """AlreadyExistsError when an identity of `tenant` is bound to another tenant."""
        for identity in tenant.identities:
            rows = await self._query(
                "SELECT tenant FROM tenant_identities WHERE identity = ?", (identity,)
            )
            if rows and rows[0][0] != tenant.name:
                raise identity_taken(identity, rows[0][0])

    async def update_tenant(self, tenant: Tenant) -> None:
        """Replace a tenant's policy and identities."""
        policy = tenant.policy
        await self._check_identities(tenant)
        counts = await self._transact(
            [
                (
                    "UPDATE tenants SET day_budget_nanos = ?, month_budget_nanos = ?, rpm = ?,"
                    " tpm = ?, models = ?, labels = ? WHERE name = ?",
                    (
                        policy.day_budget,
                        policy.month_budget,
                        policy.rpm,
                        policy.tpm,
                        _json(sorted(policy.models)),
                        _json(dict(policy.labels)),
                        tenant.name,
                    ),
                ),
                ("DELETE FROM tenant_identities WHERE tenant = ?", (tenant.name,)),
                *_bind(tenant),
            ]
        )
        if counts[0] == 0:
            raise no_tenant(tenant.name)

    async def delete_tenant(self, name: str, at: float) -> None:
        """Remove a tenant and revoke its keys."""
        counts = await self._transact(
            [
                ("DELETE FROM tenants WHERE name = ?", (name,)),
                ("DELETE FROM tenant_identities WHERE tenant = ?", (name,)),
                (
                    "UPDATE api_keys SET revoked_at_us = ?"
                    " WHERE tenant = ? AND revoked_at_us IS NULL",
                    (_us(at), name),
                ),
            ]
        )
        if counts[0] == 0:
            raise no_tenant(name)

    async def tenant(self, name: str) -> Tenant | None:
        """The tenant called `name`."""
        rows = await self._query(f"{_TENANT} WHERE name = ?", (name,))
        return (await self._with_identities(rows, name))[0] if rows else None

    async def tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        return await self._with_identities(await self._query(f"{_TENANT} ORDER BY name"))

    async def tenant_for_identity(self, identity: str) -> Tenant | None:
        """The tenant a certificate identity is bound to."""
        rows = await self._query(
            "SELECT tenant FROM tenant_identities WHERE identity = ?", (identity,)
        )
        return await self.tenant(rows[0][0]) if rows else None

    async def add_key(self, key: ApiKey) -> None:
        """Store a new key."""
        if await self.tenant(key.tenant) is None:
            raise no_tenant(key.tenant)
        await self._transact(
            [
                (
                    "INSERT INTO api_keys (key_id, tenant, name, secret_hash, previous_hash,"
                    " previous_until_us, expires_at_us, revoked_at_us, admin, created_at_us,"
                    " rotated_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key.key_id,
                        key.tenant,
                        key.name,
                        key.secret_hash,
                        key.previous_hash,
                        _us(key.previous_until),
                        _us(key.expires_at),
                        _us(key.revoked_at),
                        key.admin,
                        _us(key.created_at),
                        _us(key.rotated_at),
                    ),
                )
            ]
        )

    async def key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        rows = await self._query(f"{_KEY} WHERE key_id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    async def keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`), newest first."""
        if tenant is None:
            rows = await self._query(f"{_KEY} ORDER BY created_at_us DESC, key_id")
        else:
            rows = await self._query(
                f"{_KEY} WHERE tenant = ? ORDER BY created_at_us DESC, key_id", (tenant,)
            )
        return [_key(row) for row in rows]

    async def revoke_key(self, key_id: str, at: float) -> ApiKey:
        """Revoke a key (a second revocation keeps the first time)."""
        await self._transact(
            [
                (
                    "UPDATE api_keys SET revoked_at_us = ?"
                    " WHERE key_id = ? AND revoked_at_us IS NULL",
                    (_us(at), key_id),
                )
            ]
        )
        key = await self.key(key_id)
        if key is None:
            raise no_key(key_id)
        return key

    async def rotate_key(self, key_id: str, secret_hash: str, until: float, at: float) -> ApiKey:
        """A new secret; the old one valid until `until`."""
        counts = await self._transact(
            [
                (
                    "UPDATE api_keys SET previous_hash = secret_hash, secret_hash = ?,"
                    " previous_until_us = ?, rotated_at_us = ? WHERE key_id = ?",
                    (secret_hash, _us(until), _us(at), key_id),
                )
            ]
        )
        key = await self.key(key_id)
        if counts[0] == 0 or key is None:
            raise no_key(key_id)
        return key

    async def _with_identities(
        self, rows: list[tuple[Any, ...]], name: str | None = None
    ) -> list[Tenant]:
        """Tenants from their rows, with their identities (of tenant `name` only, if given)."""
        if not rows:
            return []
        if name is None:
            bound = await self._query(
                "SELECT identity, tenant FROM tenant_identities ORDER BY identity"
            )
        else:
            bound = await self._query(
                "SELECT identity, tenant FROM tenant_identities WHERE tenant = ? ORDER BY identity",
                (name,),
            )
        identities: dict[str, list[str]] = {}
        for identity, tenant in bound:
            identities.setdefault(tenant, []).append(identity)
        return [
            Tenant(
                row[0],
                TenantPolicy(
                    row[1],
                    row[2],
                    int(row[3]),
                    int(row[4]),
                    frozenset(orjson.loads(row[5])),
                    orjson.loads(row[6]),
                ),
                tuple(identities.get(row[0], ())),
                row[7] / 1_000_000,
            )
            for row in rows
        ]


def _insert_tenant(tenant: Tenant) -> tuple[str, tuple[Any, ...]]:
    policy = tenant.policy
    return (
        "INSERT INTO tenants (name, day_budget_nanos, month_budget_nanos, rpm, tpm, models,"
        " labels, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            tenant.name, policy.day_budget, policy.month_budget, policy.rpm, policy.tpm,
            _json(sorted(policy.models)), _json(dict(policy.labels)), _us(tenant.created_at),
        ),
    )  # fmt: skip


def _bind(tenant: Tenant) -> list[tuple[str, Sequence[Any]]]:
    return [
        ("INSERT INTO tenant_identities (identity, tenant) VALUES (?, ?)", (identity, tenant.name))
        for identity in tenant.identities
    ]


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _duplicate(error: BaseException) -> bool:
    """A unique-key violation (a tenant or identity that exists), in either driver's words."""
    text = f"{type(error).__name__} {error}".lower()
    return "unique" in text or "duplicate" in text


def _unavailable(error: BaseException) -> DirectoryUnavailableError:
    return DirectoryUnavailableError(
        f"tenants and keys cannot be read now ({type(error).__name__}: the database does not"
        " answer); retry shortly"
    )
