"""The `switchyard` command: serve the gateway, and call it from a terminal.

Each subcommand is one function from parsed arguments to an exit code; the
answer goes to stdout, summaries and errors to stderr, so
``switchyard query "..." > answer.txt`` captures exactly the answer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format

from switchyard_client import cli_admin, events
from switchyard_client._version import __version__
from switchyard_client.cli_base import (
    EXIT_INTERRUPTED,
    EXIT_INVALID_OUTPUT,
    EXIT_OK,
    EXIT_REPORT_MISSING,
    EXIT_USAGE,
    Command,
    Parser,
    Terminal,
    connection_options,
    tls_of,
)
from switchyard_client.client import Client
from switchyard_client.connection import DEFAULT_TARGET
from switchyard_client.conversation import Image, Message, Tool
from switchyard_client.errors import SwitchyardError, UnimplementedError
from switchyard_client.export import write as write_export
from switchyard_client.formatting import route_text, summary_line, tool_call_line, usage_text
from switchyard_client.progress import Spinner
from switchyard_client.requests import CacheMode, QueryOptions, Task
from switchyard_client.results import Summary
from switchyard_client.times import parse_when

_EXIT_CODES = f"""\
exit codes:
  0        success (health: SERVING)
  1..16    the gRPC status of the failed call, by number: 3 INVALID_ARGUMENT,
           4 DEADLINE_EXCEEDED, 5 NOT_FOUND, 6 ALREADY_EXISTS, 7 PERMISSION_DENIED,
           8 RESOURCE_EXHAUSTED, 9 FAILED_PRECONDITION, 12 UNIMPLEMENTED, 13 INTERNAL,
           14 UNAVAILABLE (also health NOT_SERVING), 16 UNAUTHENTICATED
  {EXIT_USAGE}       the command line is wrong
  {EXIT_INVALID_OUTPUT}       query --json-schema: the answer does not validate against the schema
  {EXIT_INTERRUPTED}      interrupted (Ctrl-C); the call is cancelled
"""

_DESCRIPTION = """\
Switchyard: one gRPC API in front of several language models.
`switchyard serve` runs the gateway; the other commands call a running one."""

_EXAMPLES = f"""\
examples:
  switchyard serve
  switchyard query "What is the capital of France?" --task fast
  switchyard query "Compare quicksort and mergesort" --stream
  switchyard query "What is the weather in Lisbon?" --tools tools.json --stream
  switchyard query "Who wrote Dom Casmurro?" --json-schema person.json
  switchyard query "What does this chart show?" --image chart.png
  switchyard route "Analyze this algorithm"
  switchyard usage --hours 1 --caller search
  switchyard usage export --since 24h --format csv > calls.csv
  switchyard db upgrade
  switchyard tenants create search --daily-budget 20 --models gpt-4.1,gemini-2.5-flash
  KEY=$(switchyard keys create --tenant search)
  switchyard health

environment:
  SWITCHYARD_ADDRESS   default for --address ({DEFAULT_TARGET})
  SWITCHYARD_CALLER    default for --caller
  SWITCHYARD_API_KEY   default for --api-key (prefer it: arguments show up in `ps`)
  SWITCHYARD_ADMIN_KEY default for --api-key of `tenants` and `keys` when no API key is set

{_EXIT_CODES}"""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `switchyard` console script."""
    raise SystemExit(run(argv))


def run(
    argv: Sequence[str] | None = None,
    terminal: Terminal | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Parse `argv`, run the subcommand and return its exit code."""
    terminal = terminal or Terminal(sys.stdout, sys.stderr)
    parser = build_parser(os.environ if environ is None else environ)
    args, extra = parser.parse_known_args(argv)
    if args.command != "report" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    command: Command = args.handler
    try:
        return command(args, terminal)
    except SwitchyardError as error:
        terminal.err.write(f"switchyard: {_explain(error)}\n")
        return int(error.code.value[0])
    except ValueError as error:  # a bad option the client caught before calling
        terminal.err.write(f"switchyard: {error}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        terminal.err.write("switchyard: interrupted\n")
        return EXIT_INTERRUPTED


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The whole command line, with defaults from `environ`."""
    parser = Parser(
        prog="switchyard",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"switchyard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    connection = connection_options(environ)
    # usage --tenant is for the operator: the admin key from its shell is taken too.
    operator = connection_options(environ, admin=True)

    def add(
        name: str,
        handler: Command,
        summary: str,
        parents: list[Parser],
        epilog: str = _EXIT_CODES,
        *,
        add_help: bool = True,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            add_help=add_help,
            help=summary,
            description=summary,
            epilog=epilog,
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    serve = add(
        "serve",
        _serve,
        "serve the gateway (the same as `python -m server`; configured by SWITCHYARD_* variables)",
        [],
        "exit codes:\n  0        stopped gracefully (SIGTERM or Ctrl-C)\n"
        "  1        a worker kept failing (--workers): the supervisor gave up\n"
        "  2        bad configuration; the message names the setting\n",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="gateway processes sharing the port, supervised (sets SWITCHYARD_WORKERS;"
        " more than 1 needs SWITCHYARD_REDIS_URL and a PostgreSQL SWITCHYARD_DATABASE_URL)",
    )

    query = add(
        "query", _query, "ask a question and print the answer, then one summary line", [connection]
    )
    _query_options(query)
    query.add_argument(
        "--stream", action="store_true", help="print tokens as they arrive (StreamQuery)"
    )
    query.add_argument("--json", action="store_true", help="print the whole QueryResponse as JSON")

    route = add(
        "route", _route, "show which model would answer and the cost range; calls no model",
        [connection],
    )  # fmt: skip
    _query_options(route)
    route.add_argument("--json", action="store_true", help="print the RouteDecision as JSON")

    usage = add("usage", _usage, "show the caller's spend, tokens and errors", [operator])
    usage.add_argument(
        "--hours", type=float, help="the window: the last N hours (default: the gateway's, 24)"
    )
    usage.add_argument("--json", action="store_true", help="print the GetUsageResponse as JSON")
    usage.add_argument("--tenant", help="another tenant's usage (the admin credential only)")
    usage_commands = usage.add_subparsers(dest="usage_command", metavar="export")
    export = usage_commands.add_parser(
        "export",
        help="write the caller's calls of a window as CSV or JSON Lines (ExportUsage)",
        description="Write every call of the caller that ended in [--since, --until), oldest"
        " first, to stdout: one row or line per call, exact money in dollars. An interrupted"
        " export resumes where it stopped.",
        epilog=_EXIT_CODES,
        parents=[operator],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.set_defaults(handler=_export)
    export.add_argument(
        "--since", required=True, metavar="WHEN", help="start: ISO 8601 (UTC by default) or 24h, 7d"
    )
    export.add_argument("--until", metavar="WHEN", help="end (exclusive); default now")
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl", help="default jsonl")
    export.add_argument("--page-size", type=int, default=0, help="calls per message (1 to 5000)")
    export.add_argument("--tenant", help="another tenant's calls (the admin credential only)")

    db = add("db", _db_help, "the ledger's database (SWITCHYARD_DATABASE_URL)", [])
    db_commands = db.add_subparsers(dest="db_command", metavar="upgrade")
    upgrade = db_commands.add_parser(
        "upgrade",
        help="apply the ledger's schema migrations now (the gateway also does at start-up)",
        description="Bring the database named by SWITCHYARD_DATABASE_URL (default: SQLite in"
        " SWITCHYARD_DATA_DIR) to the newest schema. Safe while replicas start: PostgreSQL"
        " migrations run one at a time under a lock.",
        epilog="exit codes:\n  0        the schema is current\n"
        "  2        bad configuration, or the database cannot be reached\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upgrade.set_defaults(handler=_db_upgrade)

    cli_admin.register(add, environ, _EXIT_CODES)

    health = add("health", _health, "check the gateway's health (grpc.health.v1)", [connection])
    health.add_argument(
        "--service",
        default="",
        help="the service to check, e.g. switchyard.v1.GatewayService (default: the server)",
    )

    add(
        "report",
        _report,
        "the gateway's report (its own options: switchyard report --help)",
        [],
        "exit codes: the report's own; 1 when this build has no report\n",
        add_help=False,  # --help belongs to the report's own parser
    )
    return parser


def _query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help='the question; "-" reads it from stdin')
    parser.add_argument(
        "--task",
        choices=[task.value for task in Task],
        help="the kind of work, which picks the model (default: detected from the prompt)",
    )
    parser.add_argument("--model", help="a model from the catalog; overrides --task")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="cap on generated tokens")
    parser.add_argument("--temperature", type=float, help="sampling temperature, 0 to 2")
    parser.add_argument(
        "--no-fallback", action="store_true", help="answer with the routed model only"
    )
    parser.add_argument(
        "--cache",
        choices=[mode.value for mode in CacheMode],
        help="how the response cache may serve and store this query (default: default)",
    )
    parser.add_argument(
        "--tools",
        type=Path,
        metavar="FILE",
        help='tools the model may call: a JSON list of {"name", "description", "parameters"}'
        " (parameters: a JSON Schema); the calls it asks for are printed",
    )
    parser.add_argument(
        "--tool-choice",
        metavar="auto|none|required|NAME",
        help="whether the model must call a tool, or which one (default: auto)",
    )
    parser.add_argument(
        "--json-schema",
        type=Path,
        metavar="FILE",
        help="answer JSON that validates against the JSON Schema in FILE (the gateway checks"
        f" it; exit {EXIT_INVALID_OUTPUT} when the answer does not)",
    )
    parser.add_argument(
        "--image",
        action="append",
        metavar="PATH_OR_URL",
        help="attach an image (a .png, .jpg, .gif or .webp file, or an http(s) URL); repeatable",
    )


def _client(args: argparse.Namespace) -> Client:
    return Client(args.address, caller=args.caller, api_key=args.api_key, tls=tls_of(args))


def _prompt_and_options(args: argparse.Namespace) -> tuple[str, QueryOptions]:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options: QueryOptions = {}
    if args.task:
        options["task"] = args.task
    if args.model:
        options["model"] = args.model
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.no_fallback:
        options["disable_fallback"] = True
    if args.cache:
        options["cache_mode"] = args.cache
    if args.tools is not None:
        options["tools"] = _tools_file(args.tools)
    if args.tool_choice:
        options["tool_choice"] = args.tool_choice
    if args.json_schema is not None:
        schema = _json_file(args.json_schema, "--json-schema")
        if not isinstance(schema, dict):
            raise ValueError(f"--json-schema {args.json_schema}: expected a JSON Schema object")
        options["response_format"] = schema
    if args.image:
        # The prompt and its images become one user message.
        text = [prompt] if prompt.strip() else []
        options["messages"] = [Message.user(*text, *map(_image, args.image))]
        prompt = ""
    return prompt, options


def _json_file(path: Path, option: str) -> Any:
    """The JSON value in `path`; ValueError (exit 64) names the option and the problem."""
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"{option} {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"{option} {path} is not JSON: {error}") from None


def _tools_file(path: Path) -> list[Tool]:
    tools = _json_file(path, "--tools")
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise ValueError(f'--tools {path}: expected a JSON list of {{"name": ...}} objects')
    try:
        return [Tool.from_dict(tool) for tool in tools]
    except ValueError as error:
        raise ValueError(f"--tools {path}: {error}") from None


def _image(source: str) -> Image:
    if source.startswith(("https://", "http://")):
        return Image(url=source)
    try:
        return Image.from_file(source)
    except OSError as error:
        raise ValueError(f"--image {source}: {error.strerror or error}") from None


def _serve(args: argparse.Namespace, terminal: Terminal) -> int:
    from server.__main__ import main as serve  # noqa: PLC0415 (the client needs no server code)

    if args.workers is not None:  # the server reads its settings from the environment
        os.environ["SWITCHYARD_WORKERS"] = str(args.workers)
    serve([])  # its options are this command's, already read
    return EXIT_OK


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return count


def _query(args: argparse.Namespace, terminal: Terminal) -> int:
    prompt, options = _prompt_and_options(args)
    with _client(args) as client:
        if not args.stream:
            with Spinner(terminal.out, "waiting for the answer"):
                answer = client.query(prompt, timeout=args.timeout, **options)
            if args.json:
                terminal.out.write(json_format.MessageToJson(answer.raw) + "\n")
                return _validated(answer.summary, terminal)
            if answer.text or not answer.tool_calls:
                terminal.out.write(answer.text + "\n")
            for call in answer.tool_calls:
                terminal.out.write(tool_call_line(call) + "\n")
            terminal.out.flush()
            terminal.err.write(summary_line(answer.summary) + "\n")
            return _validated(answer.summary, terminal)

        stream = client.stream(prompt, timeout=args.timeout, **options)
        shown = in_text = False  # anything written; text written since the last line break
        with stream:
            spinner = Spinner(terminal.out, "waiting for the first token")
            spinner.start()
            try:
                for event in stream.events():
                    if isinstance(event, events.TextDelta):
                        spinner.stop()
                        terminal.out.write(event.text)
                        shown = in_text = True
                    elif isinstance(event, events.ToolCallCompleted):  # each as it completes
                        spinner.stop()
                        line = tool_call_line(event.call) + "\n"
                        terminal.out.write("\n" + line if in_text else line)
                        shown, in_text = True, False
                    else:
                        continue
                    terminal.out.flush()
            finally:
                spinner.stop()
        if in_text or not shown:  # the text ends its line, as the unary answer does
            terminal.out.write("\n")
        terminal.out.flush()
        terminal.err.write(summary_line(stream.summary) + "\n")
        return _validated(stream.summary, terminal)


def _validated(summary: Summary, terminal: Terminal) -> int:
    """EXIT_OK, or EXIT_INVALID_OUTPUT saying why the answer does not fit its JSON Schema."""
    if summary.validation != "INVALID":
        return EXIT_OK
    terminal.err.write(
        "switchyard: the answer does not fit the requested JSON format:"
        f" {summary.validation_error}\n"
    )
    return EXIT_INVALID_OUTPUT


def _route(args: argparse.Namespace, terminal: Terminal) -> int:
    prompt, options = _prompt_and_options(args)
    with _client(args) as client:
        route = client.route(prompt, timeout=args.timeout, **options)
    if args.json:
        terminal.out.write(json_format.MessageToJson(route.raw) + "\n")
    else:
        terminal.out.write(route_text(route) + "\n")
    return EXIT_OK


def _usage(args: argparse.Namespace, terminal: Terminal) -> int:
    start = end = None
    if args.hours is not None:
        end = datetime.now(UTC)
        start = end - timedelta(hours=args.hours)
    with _client(args) as client:
        try:
            usage = client.usage(start=start, end=end, tenant=args.tenant, timeout=args.timeout)
        except UnimplementedError as error:
            terminal.err.write(
                f"switchyard: the gateway at {args.address} does not report usage yet"
                " (GetUsage answered UNIMPLEMENTED); upgrade it to a build that serves"
                " GetUsage\n"
            )
            return int(error.code.value[0])
    if args.json:
        terminal.out.write(json_format.MessageToJson(usage) + "\n")
    else:
        terminal.out.write(usage_text(usage) + "\n")
    return EXIT_OK


def _export(args: argparse.Namespace, terminal: Terminal) -> int:
    now = datetime.now(UTC)
    start = parse_when(args.since, now)
    end = parse_when(args.until, now) if args.until else None
    with _client(args) as client:
        calls = client.export(
            start=start,
            end=end,
            page_size=args.page_size,
            tenant=args.tenant,
            timeout=args.timeout,
        )
        written = write_export(calls, terminal.out, args.format)
    terminal.err.write(f"exported {written} calls\n")
    return EXIT_OK


def _db_help(args: argparse.Namespace, terminal: Terminal) -> int:
    terminal.err.write("switchyard db: name a command: switchyard db upgrade\n")
    return EXIT_USAGE


def _db_upgrade(args: argparse.Namespace, terminal: Terminal) -> int:
    try:
        # The server's code, imported only for this command (like `report`).
        migrate = importlib.import_module("server.state.sql.migrate")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("server"):
            raise
        terminal.err.write("switchyard db is not available in this build\n")
        return EXIT_REPORT_MISSING
    code: int = migrate.command_upgrade(terminal.out, terminal.err)
    return code


def _health(args: argparse.Namespace, terminal: Terminal) -> int:
    with _client(args) as client:
        status = client.health(args.service, timeout=args.timeout)
    terminal.out.write(status + "\n")
    return EXIT_OK if status == "SERVING" else int(grpc.StatusCode.UNAVAILABLE.value[0])


def _report(args: argparse.Namespace, terminal: Terminal) -> int:
    try:
        # Imported only when asked for: it is optional, and it brings the server's code.
        report = importlib.import_module("server.report")
    except ModuleNotFoundError as error:
        if error.name not in ("server", "server.report"):
            raise
        terminal.err.write("switchyard report is not available in this build\n")
        return EXIT_REPORT_MISSING
    parser = Parser(
        prog="switchyard report",
        description="What a workload would cost with AUTO routing versus one model (dry run:"
        " no model is called).",
    )
    report.add_arguments(parser)
    result: int = report.run(parser.parse_args(args.extra))
    return result


def _explain(error: SwitchyardError) -> str:
    """The error for a person: status, message, request id and retry hint."""
    text = str(error)
    if error.retry_after is not None:
        text += f"; retry in {error.retry_after:g} s"
    for attempt in error.attempts:
        text += f"\n  tried {attempt.model}: {attempt.outcome}" + (
            f" ({attempt.error})" if attempt.error else ""
        )
    return text
