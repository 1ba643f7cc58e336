"""`switchyard report`: what a workload would cost with AUTO routing versus one model.

It replays a workload file through the router in-process, dry-run (no relay
call, no server: the same settings and catalog as the gateway, so
``SWITCHYARD_CONFIG`` applies), and prices every request twice: as AUTO
routing sends it, and as if everything went to one model of your choice::

    python -m server.report clients/examples/workload.jsonl --model claude-sonnet-4-20250514
    python -m server.report workload.jsonl --png report.png

The workload is JSON Lines, one request per line (blank lines and lines
starting with ``#`` are skipped)::

    {"prompt": "Summarise this ticket", "task": "fast", "expected_output_tokens": 120}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}]}
    {"prompt": "...", "model": "gpt-4.1", "max_tokens": 800, "count": 50}

Keys: ``prompt`` and/or ``messages`` (one is required), ``task``
(reasoning, creative, fast, batch), ``model``, ``max_tokens``,
``expected_output_tokens``, ``count`` (how many such requests; default 1).

Estimates, the same on both sides so the comparison is fair: input tokens
are the router's estimate (4 bytes of UTF-8 per token plus 4 per message,
as Route reports); output tokens are the row's ``expected_output_tokens``,
else ``--output-tokens`` (default 400), capped at the max_tokens the model
would be called with. Money is exact (integer nano-dollars); the saving is
rounded to a tenth of a percent only for display.

Another CLI can embed it through `add_arguments` and `run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import orjson

from server.domain import Message, ModelSpec, Request, Role, Task, Usage
from server.errors import UnknownModelError
from server.pipeline.router import Router
from server.pricing import cost_nanos, format_usd
from server.settings import ConfigError, load_settings

DEFAULT_OUTPUT_TOKENS = 400
_ROW_KEYS = frozenset(
    {"prompt", "messages", "task", "model", "max_tokens", "expected_output_tokens", "count"}
)


class WorkloadError(Exception):
    """A workload line that cannot be read; the message names the line."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the workload."""

    line: int
    request: Request
    expected_output_tokens: int | None
    count: int


@dataclass(slots=True)
class ModelLine:
    """What one model is sent in one scenario."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0  # nano-dollars


@dataclass(slots=True)
class Scenario:
    """Per-model totals of one way of sending the workload."""

    name: str
    models: dict[str, ModelLine] = field(default_factory=dict)

    def add(self, model: ModelSpec, count: int, input_tokens: int, output_tokens: int) -> None:
        """Price `count` requests of this shape on `model` and add them."""
        line = self.models.setdefault(model.name, ModelLine())
        line.requests += count
        line.input_tokens += count * input_tokens
        line.output_tokens += count * output_tokens
        line.cost += count * cost_nanos(Usage(input_tokens, output_tokens), model.price)

    @property
    def cost(self) -> int:
        """Total nano-dollars."""
        return sum(line.cost for line in self.models.values())

    @property
    def requests(self) -> int:
        """Total requests."""
        return sum(line.requests for line in self.models.values())


@dataclass(frozen=True, slots=True)
class Comparison:
    """AUTO routing against everything on one model."""

    auto: Scenario
    single: Scenario
    baseline: str
    rows: int

    @property
    def saving(self) -> int:
        """Nano-dollars AUTO saves (negative when it costs more)."""
        return self.single.cost - self.auto.cost

    @property
    def saving_percent(self) -> Decimal:
        """The saving as a percentage of the single-model cost, to 0.1."""
        if not self.single.cost:
            return Decimal(0)
        exact = Decimal(self.saving * 100) / Decimal(self.single.cost)
        return exact.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)


def load_workload(path: Path) -> list[Row]:
    """Read and validate a JSONL workload; WorkloadError names the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read it ({exc.strerror})") from None
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            rows.append(_row(number, orjson.loads(raw)))
        except orjson.JSONDecodeError:
            raise WorkloadError(f"{path}:{number}: not a JSON object") from None
        except WorkloadError as error:
            raise WorkloadError(f"{path}:{number}: {error}") from None
    if not rows:
        raise WorkloadError(f"{path}: no requests in it")
    return rows


def _row(number: int, data: Any) -> Row:
    if not isinstance(data, dict):
        raise WorkloadError("each line must be a JSON object")
    unknown = set(data) - _ROW_KEYS
    if unknown:
        raise WorkloadError(
            f"unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_ROW_KEYS))}"
        )
    messages = [_message(item) for item in data.get("messages") or ()]
    prompt = data.get("prompt")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise WorkloadError("prompt must be non-empty text")
        messages.append(Message.of(Role.USER, prompt))
    if not any(message.role is Role.USER for message in messages):
        raise WorkloadError("needs a prompt or a user message")
    task = data.get("task")
    if task is not None:
        try:
            task = Task(str(task).lower().removeprefix("task_"))
        except ValueError:
            raise WorkloadError(
                f"task {task!r} is not one of {', '.join(t.value for t in Task)}"
            ) from None
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise WorkloadError("model must be a model name")
    request = Request(
        messages=tuple(messages),
        task=task,
        model=model or None,
        max_tokens=_count(data, "max_tokens", minimum=1),
    )
    return Row(
        number,
        request,
        _count(data, "expected_output_tokens", minimum=0),
        _count(data, "count", minimum=1) or 1,
    )


def _message(item: Any) -> Message:
    if not isinstance(item, dict) or not isinstance(item.get("content"), str):
        raise WorkloadError('messages must be objects like {"role": "user", "content": "..."}')
    try:
        role = Role(str(item.get("role")))
    except ValueError:
        raise WorkloadError("a message role must be system, user or assistant") from None
    return Message.of(role, item["content"])


def _count(data: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WorkloadError(f"{key} must be a whole number of at least {minimum}")
    return value


def compare(rows: Sequence[Row], router: Router, baseline: str, output_tokens: int) -> Comparison:
    """Price every row as AUTO routes it and as if all went to `baseline`."""
    model = router.catalog.get(baseline)
    if model is None:
        raise UnknownModelError(baseline, router.catalog.names)
    auto, single = Scenario("AUTO routing"), Scenario(f"everything on {baseline}")
    for row in rows:
        wanted = output_tokens if row.expected_output_tokens is None else row.expected_output_tokens
        try:
            route = router.decide(row.request)
        except UnknownModelError as error:
            raise WorkloadError(f"line {row.line}: {error.message}") from None
        auto.add(route.model, row.count, route.input_tokens, min(wanted, route.max_tokens))
        pinned = router.decide(
            Request(
                messages=row.request.messages, model=baseline, max_tokens=row.request.max_tokens
            )
        )
        single.add(model, row.count, pinned.input_tokens, min(wanted, pinned.max_tokens))
    return Comparison(auto, single, baseline, len(rows))


def render(comparison: Comparison, source: str, output_tokens: int) -> str:
    """The report as text."""
    out = [
        f"Switchyard cost report for {source}: {comparison.auto.requests} requests"
        f" ({comparison.rows} rows), dry run: no model was called.",
        f"Output tokens per request: the row's expected_output_tokens, else {output_tokens},"
        " capped at the max_tokens the model is called with. Input: Route's estimate.",
        "",
    ]
    for scenario in (comparison.auto, comparison.single):
        out.append(scenario.name)
        out.append(
            f"  {'model':<28}{'requests':>10}{'input tokens':>15}{'output tokens':>15}"
            f"{'cost (USD)':>16}"
        )
        for name, line in sorted(scenario.models.items()):
            out.append(
                f"  {name:<28}{line.requests:>10,}{line.input_tokens:>15,}"
                f"{line.output_tokens:>15,}{format_usd(line.cost):>16}"
            )
        out.append(
            f"  {'total':<28}{scenario.requests:>10,}{'':>30}{format_usd(scenario.cost):>16}"
        )
        out.append("")
    saving = comparison.saving
    if saving >= 0:
        out.append(
            f"AUTO routing saves ${format_usd(saving)} ({comparison.saving_percent}%) against"
            f" sending everything to {comparison.baseline}."
        )
    else:
        out.append(
            f"AUTO routing costs ${format_usd(-saving)} more ({-comparison.saving_percent}%) than"
            f" sending everything to {comparison.baseline}."
        )
    return "\n".join(out) + "\n"


def write_png(comparison: Comparison, path: Path) -> None:
    """A stacked bar chart: AUTO (one segment per model) beside the single model."""
    try:
        import matplotlib  # noqa: PLC0415 (optional extra, imported only when asked for)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise WorkloadError(
            "--png needs matplotlib: pip install 'switchyard[report]' (or -e '.[report]')"
        ) from None
    scenarios = (comparison.auto, comparison.single)
    models = sorted({name for s in scenarios for name in s.models})
    labels = ["AUTO routing", f"all on\n{comparison.baseline}"]
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    bottoms = [0.0, 0.0]
    for model in models:
        # Dollars as floats for drawing only; every figure printed comes from exact nanos.
        heights = [
            float(_usd(s.models[model].cost)) if model in s.models else 0.0 for s in scenarios
        ]
        axes.bar(labels, heights, bottom=bottoms, label=model, width=0.55)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for index, scenario in enumerate(scenarios):
        axes.annotate(
            f"${format_usd(scenario.cost)}",
            (index, bottoms[index]),
            ha="center",
            va="bottom",
            xytext=(0, 4),
            textcoords="offset points",
        )
    verb = "saves" if comparison.saving >= 0 else "costs more by"
    axes.set_title(
        f"{comparison.auto.requests} requests: AUTO {verb} {abs(comparison.saving_percent)}%"
    )
    axes.set_ylabel("cost (USD)")
    axes.set_ylim(0, max(bottoms) * 1.15 or 1)
    axes.legend(title="model", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the report's arguments to `parser` (for a CLI that embeds it)."""
    parser.add_argument("workload", type=Path, help="JSONL file, one request per line")
    parser.add_argument(
        "--model",
        help="the single model to compare with (default: the REASONING task's model)",
    )
    parser.add_argument(
        "--output-tokens",
        type=int,
        default=DEFAULT_OUTPUT_TOKENS,
        help=f"output tokens per request when a row gives none (default {DEFAULT_OUTPUT_TOKENS})",
    )
    parser.add_argument("--png", type=Path, help="also write a bar chart to this PNG file")


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 on success, 2 for a bad workload, setting or argument."""
    try:
        settings = load_settings(os.environ)
        router = Router(settings.catalog, settings.routing)
        if args.output_tokens < 0:
            raise WorkloadError("--output-tokens must be 0 or more")
        baseline = args.model or settings.catalog.task_models[Task.REASONING].name
        comparison = compare(load_workload(args.workload), router, baseline, args.output_tokens)
        sys.stdout.write(render(comparison, str(args.workload), args.output_tokens))
        if args.png is not None:
            write_png(comparison, args.png)
            sys.stdout.write(f"Chart written to {args.png}\n")
    except (WorkloadError, ConfigError) as error:
        sys.stderr.write(f"switchyard report: {error}\n")
        return 2
    except UnknownModelError as error:
        sys.stderr.write(f"switchyard report: --model: {error.message}\n")
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m server.report`."""
    parser = argparse.ArgumentParser(
        prog="switchyard report",
        description="What a workload would cost with AUTO routing versus one model (dry run).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
