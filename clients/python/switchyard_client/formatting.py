"""What the CLI prints: pure functions from results to text, unit-tested alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf import timestamp_pb2
from switchyard.admin.v1 import admin_pb2 as admin_pb
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.conversation import ToolCall
from switchyard_client.results import Route, Summary, usd


def dollars(amount: Decimal) -> str:
    """$0.000075000: exact, nine decimals, as the gateway costs calls."""
    return f"${amount:.9f}"


def summary_line(summary: Summary) -> str:
    """One line after an answer: model, tokens, cost, latency and attempts."""
    parts = [
        f"model={summary.model}",
        f"tokens_in={summary.usage.input_tokens}",
        f"tokens_out={summary.usage.output_tokens}",
        f"cost={dollars(summary.cost)}",
        f"latency_ms={summary.latency_ms}",
    ]
    if summary.time_to_first_token_ms is not None:
        parts.append(f"first_token_ms={summary.time_to_first_token_ms}")
    tries = ", ".join(
        f"{a.model} {a.outcome}" + (f" {a.http_status}" if a.http_status else "")
        for a in summary.attempts
    )
    parts.append(
        f"attempts={len(summary.attempts)}" + (f" [{tries}]" if len(summary.attempts) > 1 else "")
    )
    if summary.cached:
        parts.append("cached=yes")
    if summary.usage.estimated:
        parts.append("usage=estimated")
    if summary.validation is not None:
        parts.append(f"validation={summary.validation}")
    return " ".join(parts)


def tool_call_line(call: ToolCall) -> str:
    """One tool call the model asked for: its name, JSON arguments and id."""
    arguments = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)  # stable lines
    return f"tool call {call.name} {arguments} (id {call.id})"


def route_text(route: Route) -> str:
    """The routing decision and its cost range, one fact per line."""
    lines = [
        ("model", f"{route.model} ({route.provider})"),
        ("fallbacks", ", ".join(route.fallback_models) or "none"),
        ("task", f"{route.task} (decided by {route.basis}; complexity {route.complexity})"),
        ("reason", route.reason),
        ("tokens", f"~{route.estimated_input_tokens} in, up to {route.max_tokens} out"),
        ("cost", f"{dollars(route.cost_min)} to {dollars(route.cost_max)}"),
    ]
    circuits = [
        f"{state.model} {pb.CircuitState.Name(state.circuit).removeprefix('CIRCUIT_STATE_')}"
        + (f" (retry in {state.retry_in_ms} ms)" if state.retry_in_ms else "")
        for state in route.raw.model_states
    ]
    if circuits:
        lines.append(("circuits", ", ".join(circuits)))
    skipped = [f"{model} ({reason})" for model, reason in route.skipped]
    if skipped:
        lines.append(("skipped", ", ".join(skipped)))
    admission = route.raw.admission
    lines.append(("admitted", "yes" if route.admitted else f"no: {admission.reason}"))
    return "\n".join(f"{name:<10} {value}" for name, value in lines)


def usage_text(usage: pb.GetUsageResponse) -> str:
    """A caller's usage report: totals, per model, cache, budgets and load."""
    tokens = usage.tokens
    lines = [
        f"caller     {usage.caller}",
        f"window     {_when(usage.start)} to {_when(usage.end)}",
        f"requests   {usage.requests} ({usage.errors} failed)",
        f"cost       {dollars(usd(usage.cost))}",
        f"tokens     {tokens.input_tokens} in ({tokens.cached_input_tokens} cached"
        + (
            f", {tokens.cache_write_input_tokens} written to cache"
            if tokens.cache_write_input_tokens
            else ""
        )
        + f"), {tokens.output_tokens} out"
        + (f" ({tokens.reasoning_tokens} reasoning)" if tokens.reasoning_tokens else ""),
    ]
    if usage.HasField("cache"):
        cache = usage.cache
        lines.append(
            f"cache      {cache.hits} hits, {cache.misses} misses ({cache.hit_rate:.1%}),"
            f" saved {dollars(usd(cache.saved_cost))}"
        )
    if usage.models:
        lines.append("")
        lines.append(
            f"{'model':<28} {'attempts':>8} {'failed':>6} {'tokens in':>10}"
            f" {'tokens out':>10} {'cost':>14}"
        )
        lines.extend(
            f"{model.model:<28} {model.attempts:>8} {model.failed_attempts:>6}"
            f" {model.tokens.input_tokens:>10} {model.tokens.output_tokens:>10}"
            f" {dollars(usd(model.cost)):>14}"
            for model in usage.models
        )
    if usage.budgets:
        lines.append("")
        lines.extend(
            f"budget     {budget.period}: {dollars(usd(budget.spent))} of"
            f" {dollars(usd(budget.limit))}, resets {_when(budget.resets_at)}"
            for budget in usage.budgets
        )
    if usage.in_flight:
        load = ", ".join(f"{p.provider} {p.in_flight}/{p.limit}" for p in usage.in_flight)
        lines.append(f"in flight  {load}")
    return "\n".join(lines)


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    moment = datetime.fromtimestamp(stamp.seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _budget(tenant: admin_pb.Tenant, field: str) -> str:
    if not tenant.HasField(field):  # type: ignore[arg-type]
        return "-"
    amount = usd(getattr(tenant, field))
    return f"${amount:.2f}" if amount == round(amount, 2) else f"${amount}"


def tenant_line(tenant: admin_pb.Tenant) -> str:
    """One tenant as `name: budgets, limits, models, identities, labels`."""
    parts = [
        f"daily budget {_budget(tenant, 'daily_budget')}",
        f"monthly budget {_budget(tenant, 'monthly_budget')}",
        f"rpm {tenant.rpm or '-'}",
        f"tpm {tenant.tpm or '-'}",
        f"models {', '.join(tenant.models) or 'all'}",
    ]
    if tenant.identities:
        parts.append(f"identities {', '.join(tenant.identities)}")
    if tenant.labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(tenant.labels.items())))
    return f"{tenant.name}: " + "; ".join(parts)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )


def tenant_table(tenants: Sequence[admin_pb.Tenant]) -> str:
    """Tenants as a table, one a line."""
    if not tenants:
        return "no tenants yet: switchyard tenants create NAME"
    rows = [
        (
            t.name,
            _budget(t, "daily_budget"),
            _budget(t, "monthly_budget"),
            str(t.rpm or "-"),
            str(t.tpm or "-"),
            ",".join(t.models) or "all",
            ",".join(t.identities) or "-",
        )
        for t in tenants
    ]
    return _table(("TENANT", "DAILY", "MONTHLY", "RPM", "TPM", "MODELS", "IDENTITIES"), rows)


def _stamp(message: object, field: str) -> str:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return "-"
    return _when(getattr(message, field))


def key_table(keys: Sequence[admin_pb.Key]) -> str:
    """Keys as a table, one a line: never a secret (the listing has none)."""
    if not keys:
        return "no keys: switchyard keys create --tenant NAME"
    rows = [
        (
            k.key_id,
            k.tenant,
            k.name or "-",
            k.state + (" admin" if k.admin else ""),
            _stamp(k, "created_at"),
            _stamp(k, "expires_at"),
            _stamp(k, "previous_valid_until"),
        )
        for k in keys
    ]
    return _table(
        ("KEY ID", "TENANT", "NAME", "STATE", "CREATED", "EXPIRES", "OLD SECRET UNTIL"), rows
    )
