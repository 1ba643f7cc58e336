"""The admin client: tenants and their API keys (switchyard.admin.v1.AdminService).

Example::

    from switchyard_client import AdminClient

    with AdminClient("127.0.0.1:50051", api_key=os.environ["SWITCHYARD_ADMIN_KEY"]) as admin:
        admin.create_tenant("search", daily_budget=Decimal("20"), models=["gpt-4.1"])
        key = admin.create_key("search", name="search-prod")
        print(key.secret)  # shown this once; the gateway keeps only its hash

Every method needs the admin credential (SWITCHYARD_ADMIN_KEY, or a key made
with ``admin=True``); any other key gets PermissionDeniedError. Money is
exact: budgets are Decimals of US dollars.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import TypeVar

from google.protobuf import duration_pb2
from google.type import money_pb2
from switchyard.admin.v1 import admin_pb2 as pb
from switchyard.admin.v1 import admin_pb2_grpc

from switchyard_client.base import ClientBase
from switchyard_client.errors import translated

_NANOS = 1_000_000_000
Response = TypeVar("Response")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made or rotated: the listing and, this once, the whole secret."""

    key: pb.Key
    secret: str = field(repr=False)  # sy-<key id>-<secret>: never printed by repr

    @property
    def key_id(self) -> str:
        """The key's id, safe to log."""
        return self.key.key_id


def money(amount: Dollars) -> money_pb2.Money:
    """Exact US dollars as google.type.Money; ValueError for a negative or non-number."""
    try:
        value = Decimal(amount)
    except ArithmeticError:
        raise ValueError(f"{amount!r} is not an amount of dollars (such as 12.50)") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{amount!r} must be a non-negative amount of dollars")
    nanos = int(value * _NANOS)
    if nanos != value * _NANOS:
        raise ValueError(f"{amount!r} has more than nine decimals")
    units, fraction = divmod(nanos, _NANOS)
    return money_pb2.Money(currency_code="USD", units=units, nanos=fraction)


def _duration(span: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(span)
    return duration


class Unset(enum.Enum):
    """The type of UNSET: a field that update_tenant leaves as it is."""

    UNSET = enum.auto()


UNSET = Unset.UNSET  # update_tenant: leave this field as it is
Dollars = Decimal | int | str


def _tenant(
    name: str,
    *,
    daily_budget: Dollars | Unset | None,
    monthly_budget: Dollars | Unset | None,
    rpm: int | Unset,
    tpm: int | Unset,
    models: Iterable[str] | Unset,
    labels: Mapping[str, str] | Unset,
    identities: Iterable[str] | Unset,
) -> tuple[pb.Tenant, list[str]]:
    """A Tenant message and the names of the fields given (not UNSET), for update_mask."""
    tenant = pb.Tenant(name=name)
    given = []
    if not isinstance(daily_budget, Unset):
        given.append("daily_budget")
        if daily_budget is not None:
            tenant.daily_budget.CopyFrom(money(daily_budget))
    if not isinstance(monthly_budget, Unset):
        given.append("monthly_budget")
        if monthly_budget is not None:
            tenant.monthly_budget.CopyFrom(money(monthly_budget))
    if not isinstance(rpm, Unset):
        given.append("rpm")
        tenant.rpm = rpm
    if not isinstance(tpm, Unset):
        given.append("tpm")
        tenant.tpm = tpm
    if not isinstance(models, Unset):
        given.append("models")
        tenant.models.extend(models)
    if not isinstance(labels, Unset):
        given.append("labels")
        tenant.labels.update(labels)
    if not isinstance(identities, Unset):
        given.append("identities")
        tenant.identities.extend(identities)
    return tenant, given


class AdminClient(ClientBase):
    """A blocking client for switchyard.admin.v1.AdminService (options as ClientBase's)."""

    def _open(self) -> None:
        self._channel = self._connection.open()
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def _call(self, method: Callable[..., Response], request: object) -> Response:
        """One unary call with the control deadline; gRPC errors become SwitchyardErrors."""
        with translated():
            return method(
                request, timeout=self._timeout(None, control=True), metadata=self._metadata(None)
            )

    def create_tenant(
        self,
        name: str,
        *,
        daily_budget: Dollars | None = None,
        monthly_budget: Dollars | None = None,
        rpm: int = 0,
        tpm: int = 0,
        models: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        identities: Iterable[str] = (),
    ) -> pb.Tenant:
        """Add a tenant: budgets in dollars (None: none), limits (0: none), allowlist."""
        tenant, _ = _tenant(
            name,
            daily_budget=daily_budget,
            monthly_budget=monthly_budget,
            rpm=rpm,
            tpm=tpm,
            models=models,
            labels=labels or {},
            identities=identities,
        )
        response = self._call(self._stub.CreateTenant, pb.CreateTenantRequest(tenant=tenant))
        return response.tenant

    def list_tenants(self) -> list[pb.Tenant]:
        """Every tenant, by name."""
        response = self._call(self._stub.ListTenants, pb.ListTenantsRequest())
        return list(response.tenants)

    def update_tenant(
        self,
        name: str,
        *,
        daily_budget: Dollars | Unset | None = UNSET,
        monthly_budget: Dollars | Unset | None = UNSET,
        rpm: int | Unset = UNSET,
        tpm: int | Unset = UNSET,
        models: Iterable[str] | Unset = UNSET,
        labels: Mapping[str, str] | Unset = UNSET,
        identities: Iterable[str] | Unset = UNSET,
    ) -> pb.Tenant:
        """Change only the fields given (None clears a budget; [] allows every model)."""
        tenant, given = _tenant(
            name,
            daily_budget=daily_budget,
            monthly_budget=monthly_budget,
            rpm=rpm,
            tpm=tpm,
            models=models,
            labels=labels,
            identities=identities,
        )
        if not given:
            raise ValueError("name at least one field to change")
        response = self._call(
            self._stub.UpdateTenant, pb.UpdateTenantRequest(tenant=tenant, update_mask=given)
        )
        return response.tenant

    def delete_tenant(self, name: str) -> None:
        """Remove a tenant and revoke its keys (its ledger stays)."""
        self._call(self._stub.DeleteTenant, pb.DeleteTenantRequest(name=name))

    def create_key(
        self,
        tenant: str,
        *,
        name: str = "",
        expires_in: timedelta | None = None,
        admin: bool = False,
    ) -> NewKey:
        """A new key for `tenant`; its secret is in the answer and nowhere else."""
        request = pb.CreateKeyRequest(tenant=tenant, name=name, admin=admin)
        if expires_in is not None:
            request.expires_in.CopyFrom(_duration(expires_in))
        response = self._call(self._stub.CreateKey, request)
        return NewKey(response.key, response.secret)

    def list_keys(self, tenant: str | None = None) -> list[pb.Key]:
        """Keys (of one tenant, or all), newest first; never their secrets."""
        response = self._call(self._stub.ListKeys, pb.ListKeysRequest(tenant=tenant or ""))
        return list(response.keys)

    def revoke_key(self, key_id: str) -> pb.Key:
        """Stop a key, on every replica within seconds."""
        response = self._call(self._stub.RevokeKey, pb.RevokeKeyRequest(key_id=key_id))
        return response.key

    def rotate_key(self, key_id: str, *, grace: timedelta | None = None) -> NewKey:
        """A new secret for the key; the old one works `grace` more (default: the gateway's)."""
        request = pb.RotateKeyRequest(key_id=key_id)
        if grace is not None:
            request.grace.CopyFrom(_duration(grace))
        response = self._call(self._stub.RotateKey, request)
        return NewKey(response.key, response.secret)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
