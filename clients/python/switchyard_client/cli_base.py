"""What every `switchyard` subcommand shares: exit codes, the terminal, the
parser that exits 64 on a usage error, and the connection options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from switchyard_client.connection import DEFAULT_TARGET, TLS

EXIT_OK = 0
EXIT_REPORT_MISSING = 1
EXIT_USAGE = 64  # sysexits EX_USAGE: clear of every gRPC status number
EXIT_INVALID_OUTPUT = 65  # sysexits EX_DATAERR: the answer does not fit the JSON Schema asked for
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@dataclass(frozen=True, slots=True)
class Terminal:
    """Where a command writes: its answer, and everything else."""

    out: TextIO
    err: TextIO


Command = Callable[[argparse.Namespace, Terminal], int]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit 64, not gRPC's 2 (UNKNOWN)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def connection_options(environ: Mapping[str, str], *, admin: bool = False) -> Parser:
    """--address, --caller, --api-key, TLS and --timeout, defaulted from `environ`.

    For the admin commands (`admin`), the key defaults to $SWITCHYARD_API_KEY,
    else $SWITCHYARD_ADMIN_KEY: the operator's shell that started the gateway
    can manage it as it is.
    """
    options = Parser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument(
        "--address",
        default=environ.get("SWITCHYARD_ADDRESS", DEFAULT_TARGET),
        help="the gateway's host:port (default: $SWITCHYARD_ADDRESS or %(default)s)",
    )
    group.add_argument(
        "--caller",
        default=environ.get("SWITCHYARD_CALLER"),
        help="your service's name, sent as x-switchyard-caller (default: $SWITCHYARD_CALLER)",
    )
    key = environ.get("SWITCHYARD_API_KEY")
    where = "$SWITCHYARD_API_KEY"
    if admin:
        key = key or environ.get("SWITCHYARD_ADMIN_KEY")
        where += " or $SWITCHYARD_ADMIN_KEY"
    group.add_argument(
        "--api-key",
        default=key,
        help=f"sent as `authorization: Bearer ...`, never printed (default: {where})",
    )
    group.add_argument("--tls", action="store_true", help="use TLS with the system's roots")
    group.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="use TLS trusting these root certificates"
    )
    group.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="mutual TLS: present this client certificate"
    )
    group.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="mutual TLS: the client certificate's key"
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="the call's deadline (default: 120; 10 for route, usage, admin and health)",
    )
    return options


def tls_of(args: argparse.Namespace) -> TLS | None:
    """The TLS the connection options ask for (None: plaintext)."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None and not args.tls:
        return None
    return TLS.from_files(args.tls_ca, args.tls_cert, args.tls_key)
