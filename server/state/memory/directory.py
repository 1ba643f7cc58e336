"""Tenants and keys in this process's memory (for SWITCHYARD_DATABASE_URL=memory and tests)."""

from __future__ import annotations

import dataclasses

from server.errors import AlreadyExistsError, NotFoundError
from server.keys import ApiKey
from server.state.directory import Tenant


def no_tenant(name: str) -> NotFoundError:
    """The error for a tenant that does not exist."""
    return NotFoundError(f"there is no tenant {name!r}; `switchyard tenants list` shows them")


def no_key(key_id: str) -> NotFoundError:
    """The error for a key id that does not exist."""
    return NotFoundError(f"there is no key {key_id!r}; `switchyard keys list` shows them")


def tenant_exists(name: str) -> AlreadyExistsError:
    """The error for a tenant created twice."""
    return AlreadyExistsError(f"tenant {name!r} exists already; update it instead")


def identity_taken(identity: str, tenant: str) -> AlreadyExistsError:
    """The error for a certificate identity bound to another tenant already."""
    return AlreadyExistsError(
        f"identity {identity!r} is bound to tenant {tenant!r} already; remove it there first"
    )


class MemoryDirectory:
    """Dictionaries of tenants and keys."""

    __slots__ = ("_keys", "_tenants")

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}

    async def create_tenant(self, tenant: Tenant) -> None:
        """Add a tenant."""
        if tenant.name in self._tenants:
            raise tenant_exists(tenant.name)
        self._check_identities(tenant)
        self._tenants[tenant.name] = tenant

    def _check_identities(self, tenant: Tenant) -> None:
        for other in self._tenants.values():
            if other.name != tenant.name:
                for identity in set(tenant.identities) & set(other.identities):
                    raise identity_taken(identity, other.name)

    async def update_tenant(self, tenant: Tenant) -> None:
        """Replace a tenant's policy and identities."""
        old = self._tenants.get(tenant.name)
        if old is None:
            raise no_tenant(tenant.name)
        self._check_identities(tenant)
        self._tenants[tenant.name] = dataclasses.replace(tenant, created_at=old.created_at)

    async def delete_tenant(self, name: str, at: float) -> None:
        """Remove a tenant and revoke its keys."""
        if self._tenants.pop(name, None) is None:
            raise no_tenant(name)
        for key_id, key in self._keys.items():
            if key.tenant == name and key.revoked_at is None:
                self._keys[key_id] = dataclasses.replace(key, revoked_at=at)

    async def tenant(self, name: str) -> Tenant | None:
        """The tenant called `name`."""
        return self._tenants.get(name)

    async def tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        return [self._tenants[name] for name in sorted(self._tenants)]

    async def tenant_for_identity(self, identity: str) -> Tenant | None:
        """The tenant bound to a certificate identity."""
        for tenant in self._tenants.values():
            if identity in tenant.identities:
                return tenant
        return None

    async def add_key(self, key: ApiKey) -> None:
        """Store a new key."""
        if key.tenant not in self._tenants:
            raise no_tenant(key.tenant)
        self._keys[key.key_id] = key

    async def key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        return self._keys.get(key_id)

    async def keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`), newest first."""
        found = [k for k in self._keys.values() if tenant is None or k.tenant == tenant]
        return sorted(found, key=lambda k: (-k.created_at, k.key_id))

    async def revoke_key(self, key_id: str, at: float) -> ApiKey:
        """Revoke a key."""
        key = self._keys.get(key_id)
        if key is None:
            raise no_key(key_id)
        if key.revoked_at is None:
            key = self._keys[key_id] = dataclasses.replace(key, revoked_at=at)
        return key

    async def rotate_key(self, key_id: str, secret_hash: str, until: float, at: float) -> ApiKey:
        """Give a key a new secret, keeping the old one until `until`."""
        key = self._keys.get(key_id)
        if key is None:
            raise no_key(key_id)
        key = self._keys[key_id] = dataclasses.replace(
            key,
            secret_hash=secret_hash,
            previous_hash=key.secret_hash,
            previous_until=until,
            rotated_at=at,
        )
        return key
