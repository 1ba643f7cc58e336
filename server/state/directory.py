"""The directory: tenants (who pays, and under which policy) and their API keys.

Kept in the SQL store of the ledger (SQLite by default, PostgreSQL shared by
replicas; ``sql/directory.py``) or in memory (``memory/directory.py``). The
identity resolvers read it (through a short cache, so a revocation reaches
every replica within seconds); the admin API writes it. Keys hold only the
hashes of their secrets (``server/keys.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from server.domain import OPEN_POLICY, TenantPolicy
from server.keys import ApiKey


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who pays: a name, a policy, and the client-certificate identities bound to it."""

    name: str
    policy: TenantPolicy = OPEN_POLICY
    identities: tuple[str, ...] = ()  # SPIFFE IDs (URI SAN) or DNS names (DNS SAN)
    created_at: float = 0.0


class Directory(Protocol):
    """Where tenants and keys are kept. Unknown names raise NotFoundError, duplicates
    AlreadyExistsError; a store that cannot answer raises DirectoryUnavailableError."""

    async def create_tenant(self, tenant: Tenant) -> None:
        """Add a tenant."""
        ...

    async def update_tenant(self, tenant: Tenant) -> None:
        """Replace a tenant's policy and identities."""
        ...

    async def delete_tenant(self, name: str, at: float) -> None:
        """Remove a tenant; its keys are revoked at `at`."""
        ...

    async def tenant(self, name: str) -> Tenant | None:
        """The tenant called `name`."""
        ...

    async def tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        ...

    async def tenant_for_identity(self, identity: str) -> Tenant | None:
        """The tenant a client certificate's SPIFFE ID or DNS name is bound to."""
        ...

    async def add_key(self, key: ApiKey) -> None:
        """Store a new key (its tenant must exist)."""
        ...

    async def key(self, key_id: str) -> ApiKey | None:
        """The key with this id, whatever its state."""
        ...

    async def keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`), newest first."""
        ...

    async def revoke_key(self, key_id: str, at: float) -> ApiKey:
        """Revoke a key from `at` on."""
        ...

    async def rotate_key(self, key_id: str, secret_hash: str, until: float, at: float) -> ApiKey:
        """Give a key a new secret; the old one stays valid until `until`."""
        ...
