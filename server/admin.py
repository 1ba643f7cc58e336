"""The admin API (switchyard.admin.v1.AdminService): tenants and their keys.

Like the gateway's servicer, each method runs inside an RPC boundary (span,
draining, status mapping); this boundary's resolver admits the admin
credential only: SWITCHYARD_ADMIN_KEY, or a key created with `admin`. Any
other key is PERMISSION_DENIED. This module also holds the admin contract's
proto <-> domain conversions, so that it and ``servicer.py``/``convert.py``
remain the only hand-written modules that touch gen/.

A new key's secret is in the CreateKey (or RotateKey) answer and nowhere
else: not in the log (which names the key id), not in the directory (which
keeps its hash). A change to a key or tenant is forgotten by this process's
key cache at once; other replicas see it within the cache's 5 seconds.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from google.protobuf import duration_pb2, timestamp_pb2
from google.type import money_pb2
from switchyard.admin.v1 import admin_pb2 as pb
from switchyard.admin.v1 import admin_pb2_grpc

from server import keys
from server.boundary import RpcBoundary
from server.catalog import Catalog
from server.clock import SYSTEM_CLOCK, Clock
from server.domain import Identity, TenantPolicy
from server.errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidRequestError,
    KeyStateError,
)
from server.identity import (
    ADMIN_TENANT,
    ANONYMOUS,
    MAX_CALLER_LENGTH,
    ApiKeyResolver,
    CallerContext,
)
from server.keys import ApiKey, digest, new_key_id, token
from server.state.directory import Directory, Tenant

log = logging.getLogger("switchyard")

SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
Context = Any  # grpc.aio.ServicerContext
NANOS = 1_000_000_000
_FIELDS = ("daily_budget", "monthly_budget", "rpm", "tpm", "models", "labels", "identities")
_RESERVED = frozenset({ADMIN_TENANT, ANONYMOUS})


class AdminResolver:
    """Admits the admin credential (the admin key, or an admin-flagged key) only."""

    __slots__ = ("_has_admin_key", "_keys")

    def __init__(self, keys: ApiKeyResolver, admin_key: str = "") -> None:
        self._keys = keys
        self._has_admin_key = bool(admin_key)

    async def resolve(self, context: CallerContext) -> Identity:
        """The admin identity, or UNAUTHENTICATED / PERMISSION_DENIED."""
        try:
            identity = await self._keys.resolve(context)
        except AuthenticationError as error:
            if self._has_admin_key:
                raise
            raise AuthenticationError(
                f"{error.message}; note that this gateway has no SWITCHYARD_ADMIN_KEY: start"
                " it with one (32 characters or more) to bootstrap the admin API"
            ) from None
        if not identity.admin:
            raise AccessDeniedError(
                f"key sy-{identity.key_id}-... belongs to tenant {identity.tenant!r} and may"
                " not call the admin API; use SWITCHYARD_ADMIN_KEY or a key created with --admin"
            )
        return identity


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Tenants and keys, for the operator."""

    def __init__(
        self,
        directory: Directory,
        boundary: RpcBoundary,
        catalog: Catalog,
        *,
        keys: ApiKeyResolver | None,
        rotation_grace: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._directory = directory
        self._boundary = boundary
        self._catalog = catalog
        self._keys = keys  # the gateway's key cache, told of every change here
        self._grace = rotation_grace
        self._clock = clock

    def _forget(self, key_id: str | None = None) -> None:
        if self._keys is not None:
            self._keys.forget(key_id)

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Context
    ) -> pb.CreateTenantResponse:
        """Add a tenant."""
        async with self._boundary.enter("CreateTenant", context):
            tenant = self._tenant(request.tenant, created_at=self._clock.wall())
            await self._directory.create_tenant(tenant)
            log.info("admin: tenant %r created", tenant.name)
            return pb.CreateTenantResponse(tenant=tenant_to_proto(tenant))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Context
    ) -> pb.ListTenantsResponse:
        """Every tenant."""
        async with self._boundary.enter("ListTenants", context):
            tenants = await self._directory.tenants()
            return pb.ListTenantsResponse(tenants=[tenant_to_proto(t) for t in tenants])

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Context
    ) -> pb.UpdateTenantResponse:
        """Change the fields of `update_mask` (all when empty)."""
        async with self._boundary.enter("UpdateTenant", context):
            unknown = set(request.update_mask) - set(_FIELDS)
            if unknown:
                raise InvalidRequestError(
                    f"update_mask names {sorted(unknown)[0]!r}; it may name: {', '.join(_FIELDS)}"
                )
            current = await self._directory.tenant(request.tenant.name)
            if current is None:
                await self._directory.update_tenant(Tenant(request.tenant.name))  # NOT_FOUND
                raise AssertionError("unreachable")  # pragma: no cover
            new = self._tenant(request.tenant, created_at=current.created_at)
            mask = set(request.update_mask or _FIELDS)
            old = current.policy
            policy = TenantPolicy(
                new.policy.day_budget if "daily_budget" in mask else old.day_budget,
                new.policy.month_budget if "monthly_budget" in mask else old.month_budget,
                new.policy.rpm if "rpm" in mask else old.rpm,
                new.policy.tpm if "tpm" in mask else old.tpm,
                new.policy.models if "models" in mask else old.models,
                new.policy.labels if "labels" in mask else old.labels,
            )
            identities = new.identities if "identities" in mask else current.identities
            tenant = Tenant(current.name, policy, identities, current.created_at)
            await self._directory.update_tenant(tenant)
            self._forget()
            log.info("admin: tenant %r updated (%s)", tenant.name, ", ".join(sorted(mask)))
            return pb.UpdateTenantResponse(tenant=tenant_to_proto(tenant))

    async def DeleteTenant(
        self, request: pb.DeleteTenantRequest, context: Context
    ) -> pb.DeleteTenantResponse:
        """Remove a tenant, revoking its keys."""
        async with self._boundary.enter("DeleteTenant", context):
            await self._directory.delete_tenant(request.name, self._clock.wall())
            self._forget()
            log.info("admin: tenant %r deleted, its keys revoked", request.name)
            return pb.DeleteTenantResponse()

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        """A new key; its secret is in this answer only."""
        async with self._boundary.enter("CreateKey", context):
            now = self._clock.wall()
            expires = (
                _seconds(request.expires_in, "expires_in")
                if request.HasField("expires_in")
                else None
            )
            if expires is not None and expires <= 0:
                raise InvalidRequestError("expires_in must be a positive duration, such as 30d")
            secret = keys.new_secret()
            key = ApiKey(
                new_key_id(),
                request.tenant,
                _label(request.name),
                digest(secret),
                expires_at=None if expires is None else now + expires,
                admin=request.admin,
                created_at=now,
            )
            await self._directory.add_key(key)
            log.info("admin: key sy-%s-... created for tenant %r", key.key_id, key.tenant)
            return pb.CreateKeyResponse(
                key=key_to_proto(key, now), secret=token(key.key_id, secret)
            )

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        """Keys, without secrets."""
        async with self._boundary.enter("ListKeys", context):
            keys = await self._directory.keys(request.tenant or None)
            now = self._clock.wall()
            return pb.ListKeysResponse(keys=[key_to_proto(key, now) for key in keys])

    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Context
    ) -> pb.RevokeKeyResponse:
        """Stop a key."""
        async with self._boundary.enter("RevokeKey", context):
            now = self._clock.wall()
            key = await self._directory.revoke_key(request.key_id, now)
            self._forget(key.key_id)
            log.info("admin: key sy-%s-... revoked", key.key_id)
            return pb.RevokeKeyResponse(key=key_to_proto(key, now))

    async def RotateKey(
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        """A new secret for a key; the old one works through the grace."""
        async with self._boundary.enter("RotateKey", context):
            grace = _seconds(request.grace, "grace") if request.HasField("grace") else self._grace
            if grace < 0:
                raise InvalidRequestError("grace must not be negative")
            now = self._clock.wall()
            current = await self._directory.key(request.key_id)
            if current is not None and current.state(now) != "active":
                raise KeyStateError(
                    f"key sy-{current.key_id}-... is {current.state(now)}; make a new key instead"
                )
            secret = keys.new_secret()
            key = await self._directory.rotate_key(request.key_id, digest(secret), now + grace, now)
            self._forget(key.key_id)
            log.info(
                "admin: key sy-%s-... rotated; the old secret works %g s more", key.key_id, grace
            )
            return pb.RotateKeyResponse(
                key=key_to_proto(key, now), secret=token(key.key_id, secret)
            )

    def _tenant(self, message: pb.Tenant, created_at: float) -> Tenant:
        """A tenant from the contract, validated."""
        name = message.name
        if not name or len(name) > MAX_CALLER_LENGTH or not name.isprintable():
            raise InvalidRequestError(
                f"tenant.name must be 1 to {MAX_CALLER_LENGTH} printable characters"
            )
        if name in _RESERVED:
            raise InvalidRequestError(f"tenant.name {name!r} is reserved; choose another")
        unknown = sorted(set(message.models) - set(self._catalog.names))
        if unknown:
            raise InvalidRequestError(
                f"tenant.models names {unknown[0]!r}, which is not served; served:"
                f" {', '.join(self._catalog.names)}"
            )
        for identity in message.identities:
            if not identity or " " in identity or len(identity) > 512:
                raise InvalidRequestError(
                    "tenant.identities holds SPIFFE IDs (spiffe://...) or DNS names"
                )
        policy = TenantPolicy(
            _nanos(message, "daily_budget"),
            _nanos(message, "monthly_budget"),
            message.rpm,
            message.tpm,
            frozenset(message.models),
            dict(message.labels),
        )
        return Tenant(name, policy, tuple(dict.fromkeys(message.identities)), created_at)


def _nanos(message: pb.Tenant, field: Literal["daily_budget", "monthly_budget"]) -> int | None:
    if not message.HasField(field):
        return None
    money: money_pb2.Money = getattr(message, field)
    if money.currency_code not in ("", "USD"):
        raise InvalidRequestError(f"tenant.{field} must be in USD")
    nanos = money.units * NANOS + money.nanos
    if nanos < 0:
        raise InvalidRequestError(f"tenant.{field} cannot be negative")
    return nanos


def _money(nanos: int) -> money_pb2.Money:
    units, fraction = divmod(nanos, NANOS)
    return money_pb2.Money(currency_code="USD", units=units, nanos=fraction)


def _seconds(duration: duration_pb2.Duration, field: str) -> float:
    seconds = duration.ToNanoseconds() / 1e9
    if seconds > 100 * 365 * 86_400:
        raise InvalidRequestError(f"{field} is longer than a century; shorten it")
    return seconds


def _label(name: str) -> str:
    if len(name) > 128 or not name.isprintable():
        raise InvalidRequestError("a key's name must be at most 128 printable characters")
    return name


def _stamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1_000_000))
    return stamp


def tenant_to_proto(tenant: Tenant) -> pb.Tenant:
    """A tenant as the contract's Tenant."""
    policy = tenant.policy
    return pb.Tenant(
        name=tenant.name,
        daily_budget=None if policy.day_budget is None else _money(policy.day_budget),
        monthly_budget=None if policy.month_budget is None else _money(policy.month_budget),
        rpm=policy.rpm,
        tpm=policy.tpm,
        models=sorted(policy.models),
        labels=dict(policy.labels),
        identities=list(tenant.identities),
        created_at=_stamp(tenant.created_at),
    )


def key_to_proto(key: ApiKey, now: float) -> pb.Key:
    """A key as the contract's Key: never its secret."""
    return pb.Key(
        key_id=key.key_id,
        tenant=key.tenant,
        name=key.name,
        state=key.state(now),
        created_at=_stamp(key.created_at),
        expires_at=_stamp(key.expires_at),
        revoked_at=_stamp(key.revoked_at),
        rotated_at=_stamp(key.rotated_at),
        previous_valid_until=_stamp(
            key.previous_until
            if key.previous_until is not None
            and key.previous_until > now
            and key.state(now) == "active"
            else None
        ),
        admin=key.admin,
    )
