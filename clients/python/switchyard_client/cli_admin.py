"""`switchyard tenants ...` and `switchyard keys ...`: the admin API from a terminal.

They need the admin credential: --api-key, else $SWITCHYARD_API_KEY, else
$SWITCHYARD_ADMIN_KEY. `keys create` and `keys rotate` print the new key,
and only it, on stdout, so ``KEY=$(switchyard keys create --tenant t)``
works; everything said about it goes to stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from switchyard_client.admin import UNSET, AdminClient, Unset
from switchyard_client.cli_base import (
    EXIT_OK,
    EXIT_USAGE,
    Command,
    Terminal,
    connection_options,
    tls_of,
)
from switchyard_client.connection import DEFAULT_CONTROL_TIMEOUT
from switchyard_client.formatting import key_table, tenant_line, tenant_table
from switchyard_client.times import SPAN_HELP, parse_span

AddCommand = Callable[..., argparse.ArgumentParser]

TENANT_EXAMPLES = """\
examples:
  switchyard tenants create search --daily-budget 20 --rpm 600 --models gpt-4.1,gemini-2.5-flash
  switchyard tenants update search --daily-budget none --label team=search
  switchyard tenants create payments --identity spiffe://prod.example/ns/pay/sa/api
  switchyard tenants list
  switchyard tenants delete search
"""

KEY_EXAMPLES = """\
examples:
  KEY=$(switchyard keys create --tenant search --name search-prod --expires 90d)
  switchyard keys list --tenant search
  NEW=$(switchyard keys rotate 3f9c0a1b2c3d --grace 24h)
  switchyard keys revoke 3f9c0a1b2c3d
"""


def register(add: AddCommand, environ: Mapping[str, str], exit_codes: str) -> None:
    """Add the `tenants` and `keys` commands through the main parser's `add`."""
    connection = connection_options(environ, admin=True)

    tenants = add("tenants", _help("tenants", "create|list|update|delete"), "manage tenants", [])
    commands = tenants.add_subparsers(dest="tenants_command", metavar="create|list|update|delete")

    def sub(
        group: Any, name: str, handler: Command, summary: str, epilog: str
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"{epilog}\n{exit_codes}",
            parents=[connection],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=handler)
        return parser

    create = sub(commands, "create", _tenant_create, "add a tenant", TENANT_EXAMPLES)
    create.add_argument("name", help="the tenant's name, 1 to 128 printable characters")
    _tenant_options(create)
    listing = sub(commands, "list", _tenant_list, "list every tenant", TENANT_EXAMPLES)
    listing.add_argument("--json", action="store_true", help="one Tenant as JSON a line")
    update = sub(
        commands, "update", _tenant_update, "change the options given, only", TENANT_EXAMPLES
    )
    update.add_argument("name", help="the tenant to change")
    _tenant_options(update)
    delete = sub(
        commands, "delete", _tenant_delete, "remove a tenant, revoking its keys", TENANT_EXAMPLES
    )
    delete.add_argument("name", help="the tenant to remove (its ledger stays)")

    keys = add("keys", _help("keys", "create|list|revoke|rotate"), "manage API keys", [])
    commands = keys.add_subparsers(dest="keys_command", metavar="create|list|revoke|rotate")
    make = sub(
        commands, "create", _key_create, "make a key; prints it, once, on stdout", KEY_EXAMPLES
    )
    make.add_argument("--tenant", required=True, help="the tenant it belongs to")
    make.add_argument("--name", default="", metavar="LABEL", help="a label to recognise it by")
    make.add_argument(
        "--expires", type=_span, metavar="SPAN", help=f"valid for this long ({SPAN_HELP})"
    )
    make.add_argument(
        "--admin", action="store_true", help="let the key call the admin API (these commands)"
    )
    listing = sub(commands, "list", _key_list, "list keys, never their secrets", KEY_EXAMPLES)
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="one Key as JSON a line")
    revoke = sub(commands, "revoke", _key_revoke, "stop a key on every replica", KEY_EXAMPLES)
    revoke.add_argument("key_id", help="the key's id (the middle of sy-<key id>-<secret>)")
    rotate = sub(
        commands,
        "rotate",
        _key_rotate,
        "give a key a new secret (printed on stdout); the old one works through --grace",
        KEY_EXAMPLES,
    )
    rotate.add_argument("key_id", help="the key's id")
    rotate.add_argument(
        "--grace",
        type=_span,
        metavar="SPAN",
        help="how long the old secret keeps working (default: the gateway's, 24h; 0s: none)",
    )


def _help(name: str, verbs: str) -> Command:
    def handler(args: argparse.Namespace, terminal: Terminal) -> int:
        terminal.err.write(f"switchyard {name}: name a command: {verbs}\n")
        return EXIT_USAGE

    return handler


def _span(text: str) -> Any:
    try:
        return parse_span(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _budget(text: str) -> Decimal | None:
    if text.strip().lower() == "none":
        return None
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except ArithmeticError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of dollars: write 20 or 12.50, or none"
        ) from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget is zero dollars or more")
    return amount


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (no limit) to 4294967295")
    return value


def _models(text: str) -> list[str]:
    """`a,b` -> [a, b]; `all` or an empty string: every model."""
    if text.strip().lower() in ("", "all"):
        return []
    return [name.strip() for name in text.split(",") if name.strip()]


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: a label reads key=value")
    return key, value


def _tenant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--daily-budget", type=_budget, default=UNSET, metavar="USD", help="per UTC day, or none"
    )
    parser.add_argument(
        "--monthly-budget",
        type=_budget,
        default=UNSET,
        metavar="USD",
        help="per UTC month, or none",
    )
    parser.add_argument(
        "--rpm", type=_count, default=UNSET, metavar="N", help="requests a minute (0: no limit)"
    )
    parser.add_argument(
        "--tpm", type=_count, default=UNSET, metavar="N", help="tokens a minute (0: no limit)"
    )
    parser.add_argument(
        "--models",
        type=_models,
        default=UNSET,
        metavar="M1,M2",
        help="the models it may use (all: every model)",
    )
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        metavar="KEY=VALUE",
        help="a label added to each of its calls (repeat for more; replaces the labels)",
    )
    parser.add_argument(
        "--identity",
        action="append",
        metavar="ID",
        help="a client certificate's SPIFFE ID or DNS name bound to it (repeat for more)",
    )


def _admin(args: argparse.Namespace) -> AdminClient:
    return AdminClient(
        args.address,
        caller=args.caller,
        api_key=args.api_key,
        tls=tls_of(args),
        control_timeout=args.timeout or DEFAULT_CONTROL_TIMEOUT,
    )


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("daily_budget", "monthly_budget", "rpm", "tpm", "models")
        if not isinstance(getattr(args, name), Unset)
    }
    if args.label is not None:
        fields["labels"] = dict(args.label)
    if args.identity is not None:
        fields["identities"] = list(args.identity)
    return fields


def _tenant_create(args: argparse.Namespace, terminal: Terminal) -> int:
    fields = _fields(args)
    with _admin(args) as admin:
        tenant = admin.create_tenant(
            args.name,
            daily_budget=fields.get("daily_budget"),
            monthly_budget=fields.get("monthly_budget"),
            rpm=fields.get("rpm", 0),
            tpm=fields.get("tpm", 0),
            models=fields.get("models", ()),
            labels=fields.get("labels"),
            identities=fields.get("identities", ()),
        )
    terminal.out.write(tenant_line(tenant) + "\n")
    return EXIT_OK


def _tenant_update(args: argparse.Namespace, terminal: Terminal) -> int:
    fields = _fields(args)
    if not fields:
        raise ValueError("name at least one option to change, such as --daily-budget 20")
    with _admin(args) as admin:
        tenant = admin.update_tenant(args.name, **fields)
    terminal.out.write(tenant_line(tenant) + "\n")
    return EXIT_OK


def _tenant_list(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        tenants = admin.list_tenants()
    _write(terminal, tenants, args.json, tenant_table)
    return EXIT_OK


def _tenant_delete(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        admin.delete_tenant(args.name)
    terminal.err.write(f"deleted tenant {args.name!r}; its keys are revoked\n")
    return EXIT_OK


def _key_create(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        new = admin.create_key(
            args.tenant, name=args.name, expires_in=args.expires, admin=args.admin
        )
    terminal.out.write(new.secret + "\n")
    terminal.out.flush()
    terminal.err.write(
        f"key sy-{new.key_id}-... for tenant {args.tenant!r}: shown this once, keep it now\n"
    )
    return EXIT_OK


def _key_list(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        keys = admin.list_keys(args.tenant)
    _write(terminal, keys, args.json, key_table)
    return EXIT_OK


def _key_revoke(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        key = admin.revoke_key(args.key_id)
    terminal.err.write(f"key sy-{key.key_id}-... of tenant {key.tenant!r} is revoked\n")
    return EXIT_OK


def _key_rotate(args: argparse.Namespace, terminal: Terminal) -> int:
    with _admin(args) as admin:
        new = admin.rotate_key(args.key_id, grace=args.grace)
    terminal.out.write(new.secret + "\n")
    terminal.out.flush()
    until = new.key.previous_valid_until
    old = (
        f"the old secret works until {until.ToDatetime().isoformat()}Z"
        if new.key.HasField("previous_valid_until")
        else "the old secret no longer works"
    )
    terminal.err.write(f"key sy-{new.key_id}-... has a new secret, shown this once; {old}\n")
    return EXIT_OK


def _write(
    terminal: Terminal, messages: Sequence[Any], as_json: bool, table: Callable[[Any], str]
) -> None:
    if as_json:
        for message in messages:
            terminal.out.write(json_format.MessageToJson(message, indent=None) + "\n")
    else:
        terminal.out.write(table(messages) + "\n")
