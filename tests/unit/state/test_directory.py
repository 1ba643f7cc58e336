"""The directory's contract, on every backend: memory, SQLite and PostgreSQL.

A SQL directory shares the ledger's database; the ledger's start applies the
migrations, so each SQL case starts one (as the gateway does) and uses its
database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.domain import TenantPolicy
from server.errors import AlreadyExistsError, DirectoryUnavailableError, NotFoundError
from server.keys import ApiKey, digest
from server.settings import LedgerSettings
from server.state.directory import Directory, Tenant
from server.state.memory import MemoryDirectory
from server.state.sql.database import Database, PostgresDatabase, SqliteDatabase
from server.state.sql.directory import SqlDirectory
from server.state.sql.ledger import SqlLedger
from tests.helpers import FakeClock

T0 = 1_800_000_000.0
POLICY = TenantPolicy(
    day_budget=20_000_000_000,
    month_budget=None,
    rpm=600,
    tpm=100_000,
    models=frozenset({"gpt-4.1", "gemini-2.5-flash"}),
    labels={"team": "search"},
)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def directory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Directory]:
    if request.param == "memory":
        yield MemoryDirectory()
        return
    database: Database
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "ledger.db")
        ledger = SqlLedger(
            database, tmp_path, LedgerSettings(data_dir=str(tmp_path)), FakeClock(),
            tmp_path / "ledger.db",
        )  # fmt: skip
    else:
        url = request.getfixturevalue("postgres_url")
        database = PostgresDatabase(url, url)
        ledger = SqlLedger(database, tmp_path, LedgerSettings(data_dir=str(tmp_path)), FakeClock())
    await ledger.start()
    yield SqlDirectory(database)
    await ledger.aclose(5.0)


def key(key_id: str = "0123456789ab", tenant: str = "search", **fields: object) -> ApiKey:
    return ApiKey(key_id, tenant, "prod", digest("secret-" + key_id), created_at=T0, **fields)  # type: ignore[arg-type]


async def test_a_tenant_round_trips_with_its_whole_policy(directory: Directory):
    tenant = Tenant("search", POLICY, ("spiffe://example.org/sa/search",), T0)
    await directory.create_tenant(tenant)
    assert await directory.tenant("search") == tenant
    assert await directory.tenant("nobody") is None
    await directory.create_tenant(Tenant("billing", created_at=T0))
    assert [t.name for t in await directory.tenants()] == ["billing", "search"]
    assert (await directory.tenants())[1] == tenant


async def test_names_and_identities_are_unique(directory: Directory):
    await directory.create_tenant(Tenant("search", identities=("spiffe://x/search",)))
    with pytest.raises(AlreadyExistsError, match="'search' exists already"):
        await directory.create_tenant(Tenant("search"))
    with pytest.raises(AlreadyExistsError, match="bound to tenant 'search'"):
        await directory.create_tenant(Tenant("other", identities=("spiffe://x/search",)))
    assert await directory.tenant("other") is None  # nothing half-made
    await directory.create_tenant(Tenant("other"))
    with pytest.raises(AlreadyExistsError, match="bound to tenant 'search'"):
        await directory.update_tenant(Tenant("other", identities=("spiffe://x/search",)))
    assert (await directory.tenant("other")).identities == ()  # type: ignore[union-attr]


async def test_an_update_replaces_policy_and_identities_but_not_the_creation_time(
    directory: Directory,
):
    await directory.create_tenant(Tenant("search", identities=("dns:a",), created_at=T0))
    await directory.update_tenant(Tenant("search", POLICY, ("search.prod.svc",), T0 + 99))
    assert await directory.tenant("search") == Tenant("search", POLICY, ("search.prod.svc",), T0)
    assert await directory.tenant_for_identity("search.prod.svc") == await directory.tenant(
        "search"
    )
    assert await directory.tenant_for_identity("dns:a") is None
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        await directory.update_tenant(Tenant("ghost"))


async def test_keys_are_stored_listed_newest_first_and_belong_to_a_tenant(directory: Directory):
    with pytest.raises(NotFoundError, match="no tenant 'search'"):
        await directory.add_key(key())
    await directory.create_tenant(Tenant("search"))
    await directory.create_tenant(Tenant("billing"))
    first = key("0123456789ab", expires_at=T0 + 30, admin=True)
    second = ApiKey("ba9876543210", "billing", "", digest("b"), created_at=T0 + 1)
    await directory.add_key(first)
    await directory.add_key(second)
    assert await directory.key("0123456789ab") == first
    assert await directory.key("ffffffffffff") is None
    assert await directory.keys() == [second, first]
    assert await directory.keys("search") == [first]


async def test_revoke_and_rotate_keep_the_key_id(directory: Directory):
    await directory.create_tenant(Tenant("search"))
    await directory.add_key(key())
    rotated = await directory.rotate_key("0123456789ab", digest("new"), T0 + 100, T0 + 10)
    assert (rotated.key_id, rotated.secret_hash, rotated.previous_hash) == (
        "0123456789ab", digest("new"), digest("secret-0123456789ab"),
    )  # fmt: skip
    assert (rotated.previous_until, rotated.rotated_at) == (T0 + 100, T0 + 10)
    assert await directory.key("0123456789ab") == rotated
    revoked = await directory.revoke_key("0123456789ab", T0 + 20)
    assert revoked.revoked_at == T0 + 20 and revoked.state(T0 + 20) == "revoked"
    again = await directory.revoke_key("0123456789ab", T0 + 30)
    assert again.revoked_at == T0 + 20  # the first revocation stands
    for missing in (
        directory.revoke_key("ffffffffffff", T0),
        directory.rotate_key("ffffffffffff", "h", T0, T0),
    ):
        with pytest.raises(NotFoundError, match="no key 'ffffffffffff'"):
            await missing


async def test_deleting_a_tenant_revokes_its_keys_and_frees_its_identities(directory: Directory):
    await directory.create_tenant(Tenant("search", identities=("spiffe://x/search",)))
    await directory.add_key(key())
    await directory.delete_tenant("search", T0 + 5)
    assert await directory.tenant("search") is None
    assert (await directory.key("0123456789ab")).revoked_at == T0 + 5  # type: ignore[union-attr]
    assert await directory.tenant_for_identity("spiffe://x/search") is None
    await directory.create_tenant(Tenant("search2", identities=("spiffe://x/search",)))
    with pytest.raises(NotFoundError):
        await directory.delete_tenant("search", T0 + 6)


async def test_a_directory_whose_database_is_down_says_unavailable(tmp_path: Path):
    # a path whose parent is a file: SQLite cannot open it
    (tmp_path / "file").write_text("")
    directory = SqlDirectory(SqliteDatabase(tmp_path / "file" / "ledger.db"))
    with pytest.raises(DirectoryUnavailableError, match="retry shortly"):
        await directory.key("0123456789ab")
