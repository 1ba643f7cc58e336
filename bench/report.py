"""Turn a run's figures into the stdout table, the target checks and the PNG chart.

Everything here reads only the results dictionary (the same one saved as JSON), so a
saved run can be re-rendered: ``python -m bench.report bench/results/<date>.json``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOOR = "floor(aiohttp)"
PEER = "litellm"
ORDER = (
    "relay",
    FLOOR,
    "floor(httpx-aiohttp)",
    "floor(httpx)",
    "switchyard",
    "switchyard(memory)",
    "switchyard(postgres)",
    "switchyard(auth)",
    "switchyard(redis)",
    "switchyard(redis, workers=2)",
    "switchyard(otlp)",
    "switchyard(otlp, default keep)",
    PEER,
)
MEMORY = "switchyard(memory)"
POSTGRES = "switchyard(postgres)"
AUTH = "switchyard(auth)"
REDIS = "switchyard(redis)"
REDIS_WORKERS = "switchyard(redis, workers=2)"
OTLP = "switchyard(otlp)"  # every trace exported
OTLP_KEEP = "switchyard(otlp, default keep)"  # the default keep policy


@dataclass(frozen=True, slots=True)
class Check:
    """One target of the issue, evaluated on the subject against a reference row."""

    name: str
    goal: str
    value: str
    ok: bool | None  # None: could not be evaluated in this run

    @property
    def mark(self) -> str:
        """✓, ✗ or – (not evaluated)."""
        return "–" if self.ok is None else ("✓" if self.ok else "✗")


def _get(row: dict[str, Any] | None, *path: str) -> float | None:
    value: Any = row
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _idle_mb(row: dict[str, Any], count: str) -> str:
    idle = row.get("idle", {}).get(count)
    if not idle:
        return "–"
    text = f"{idle['rss_mb']:.0f}" + ("*" if row.get("idle_config") else "")
    return text if idle["failed"] == 0 else f"{text}({idle['failed']}✗)"


def table(results: dict[str, Any]) -> str:
    """The fixed-width table of every row, as printed and quoted in the README."""
    rows = results["rows"]
    idle_counts = [str(c) for c in results["plan"]["idle_counts"]]
    header = [
        "target",
        "CPU ms/req",
        "sat req/s",
        "c=1 p50",
        "c=1 p99",
        "open p50",
        "open p99",
        "stream µs/tok",
        "burst µs/tok",
        "TTFT p50",
        *(f"RSS MB {int(c) // 1000}k" if int(c) >= 1000 else f"RSS MB {c}" for c in idle_counts),
    ]
    lines = [header]
    for name in ORDER:
        row = rows.get(name)
        if row is None:
            continue
        if not row.get("available"):
            lines.append([name, row.get("reason", "not available")])
            continue
        lines.append(
            [
                name,
                _num(_get(row, "unary_cpu_ms"), 3),
                _num(_get(row, "saturation_rps"), 0),
                _num(_get(row, "c1", "latency_ms", "p50")),
                _num(_get(row, "c1", "latency_ms", "p99")),
                _num(_get(row, "open", "latency_ms", "p50")),
                _num(_get(row, "open", "latency_ms", "p99")),
                _num(_get(row, "stream_cpu_us_per_token"), 1),
                _num(_get(row, "burst_cpu_us_per_token"), 1),
                _num(_get(row, "ttft", "ttft_ms", "p50")),
                *(_idle_mb(row, c) for c in idle_counts),
            ]
        )
    full = [line for line in lines if len(line) == len(header)]
    widths = [max(len(line[i]) for line in full) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        if len(line) == 2 and index > 0:
            out.append(f"{line[0]:<{widths[0]}}  {line[1]}")
            continue
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=False)
        ]
        out.append("  ".join(cells))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    for name in ORDER:
        description = rows.get(name, {}).get("description")
        if description:
            out.append(f"  {name}: {description}")
        if rows.get(name, {}).get("idle_config"):
            out.append(f"  * {name} idle streams: caps raised by {rows[name]['idle_config']}")
    return "\n".join(out)


CPU = "unary_cpu_ms"
# Where each figure of the paired rounds sits in a row (the fallback without pairs).
ROW_PATHS: dict[str, tuple[str, ...]] = {
    CPU: (CPU,),
    "c1_p50_ms": ("c1", "latency_ms", "p50"),
    "c1_p99_ms": ("c1", "latency_ms", "p99"),
    "ttft_p50_ms": ("ttft", "ttft_ms", "p50"),
}


def _row(rows: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A row, or None when it was not measured (a row without the flag counts as there)."""
    row = rows.get(name)
    return row if row is not None and row.get("available", True) else None


def _paired(
    results: dict[str, Any], name: str, key: str, reference: str = FLOOR
) -> list[tuple[float, float]] | None:
    """Each paired round's (figure of `name`, figure of `reference`), or None without pairs.

    Rounds where either figure is missing (or the reference's is zero) are left out."""
    pairs = results.get("pairs") or {}
    a, b = pairs.get(name) or {}, pairs.get(reference) or {}
    if not a.get("available") or not b.get("available"):
        return None
    rounds = [
        (float(x), float(y))
        for x, y in zip(a.get(key) or [], b.get(key) or [], strict=False)
        if isinstance(x, int | float) and isinstance(y, int | float) and y
    ]
    return rounds or None


def paired_used(results: dict[str, Any]) -> bool:
    """Whether the checks against the floor came from paired rounds (else from the rows)."""
    return _paired(results, results["subject"], CPU) is not None


def checks(results: dict[str, Any]) -> list[Check]:
    """The issue's targets, each a ratio or difference measured within this run."""
    rows = results["rows"]
    subject_name = results["subject"]
    subject = rows.get(subject_name)
    if subject is not None and not subject.get("available"):
        subject = None
    floor = rows.get(FLOOR)
    peer = rows.get(PEER) if rows.get(PEER, {}).get("available") else None
    found: list[Check] = []

    def ratio(name: str, goal: str, path: tuple[str, ...], ref: Any, limit: float) -> None:
        a, b = _get(subject, *path), _get(ref, *path)
        if a is None or b is None or b == 0:
            found.append(Check(name, goal, "not measured", None))
            return
        found.append(Check(name, goal, f"{a / b:.2f}×", a / b <= limit))

    def vs_floor(
        name: str, goal: str, row: str, limit: float, key: str, *, show_added: bool = False
    ) -> None:
        """A ratio to the floor: the median of the paired rounds' ratios, else the rows'."""
        rounds = _paired(results, row, key)
        if rounds is not None:
            ratios = [a / b for a, b in rounds]
            value = statistics.median(ratios)
            spread = ", ".join(f"{r:.2f}" for r in ratios)
            more = f"{statistics.median(a - b for a, b in rounds):+.2f} ms; " if show_added else ""
            found.append(Check(name, goal, f"{value:.2f}× ({more}rounds {spread})", value <= limit))
            return
        a, b = _get(_row(rows, row), *ROW_PATHS[key]), _get(floor, *ROW_PATHS[key])
        if a is None or not b:
            found.append(Check(name, goal, "not measured", None))
            return
        more = f" ({a - b:+.2f} ms)" if show_added else ""
        found.append(Check(name, goal, f"{a / b:.2f}×{more}", a / b <= limit))

    def added(name: str, goal: str, row: str, limit: float, key: str) -> None:
        """Milliseconds over the floor: the median of the paired rounds' differences,
        else the rows'."""
        rounds = _paired(results, row, key)
        if rounds is not None:
            differences = [a - b for a, b in rounds]
            value = statistics.median(differences)
            spread = ", ".join(f"{d:+.2f}" for d in differences)
            found.append(Check(name, goal, f"{value:+.3f} ms (rounds {spread})", value <= limit))
            return
        a, b = _get(_row(rows, row), *ROW_PATHS[key]), _get(floor, *ROW_PATHS[key])
        if a is None or b is None:
            found.append(Check(name, goal, "not measured", None))
            return
        found.append(Check(name, goal, f"{a - b:+.3f} ms", a - b <= limit))

    vs_floor("unary CPU/req vs floor", "≤ 1.3×", subject_name, 1.3, "unary_cpu_ms")
    ratio("unary CPU/req vs LiteLLM", "≤ 0.1×", ("unary_cpu_ms",), peer, 0.1)
    vs_floor("c=1 p50 vs floor", "≤ 1.2×", subject_name, 1.2, "c1_p50_ms", show_added=True)
    added("c=1 p99 added over floor", "≤ 1.5 ms", subject_name, 1.5, "c1_p99_ms")
    ratio("stream CPU/token vs floor", "≤ 1.0×", ("stream_cpu_us_per_token",), floor, 1.0)
    ratio("stream CPU/token vs LiteLLM", "≤ 0.04×", ("stream_cpu_us_per_token",), peer, 1 / 25)
    vs_floor("TTFT p50 vs floor", "≤ 1.15×", subject_name, 1.15, "ttft_p50_ms", show_added=True)
    shares = [_get(subject, "profile", kind, "telemetry") for kind in ("unary", "stream")]
    if None in shares:
        found.append(
            Check("CPU in telemetry code, no exporter", "< 5%", "not profiled (PROFILE=)", None)
        )
    else:
        worst = max(s for s in shares if s is not None)
        found.append(
            Check("CPU in telemetry code, no exporter", "< 5%", f"{worst:.1%}", worst < 0.05)
        )
    vs_floor("unary CPU/req, OTLP export of every trace, vs floor", "≤ 1.8×", OTLP, 1.8, CPU)
    vs_floor(
        "unary CPU/req, OTLP export, default keep policy, vs floor", "≤ 1.5×", OTLP_KEEP, 1.5, CPU
    )
    added(
        "c=1 p99 added over floor, OTLP export of every trace", "≤ 1.5 ms", OTLP, 1.5, "c1_p99_ms"
    )
    rounds = _paired(results, OTLP, CPU, subject_name)
    a, b = _get(_row(rows, OTLP), CPU), _get(subject, CPU)
    if rounds is not None:
        ratios = [a / b for a, b in rounds]
        spread = ", ".join(f"{r:.2f}" for r in ratios)
        value = f"{statistics.median(ratios):.2f}× (rounds {spread})"
        found.append(Check("unary CPU/req with OTLP export on", "report only", value, None))
    elif a is not None and b:
        found.append(
            Check("unary CPU/req with OTLP export on", "report only", f"{a / b:.2f}×", None)
        )

    ledger = results.get("ledger") or {}
    paired = ledger.get("paired_cpu_ms") or {}
    for name, goal, row, limit in (
        ("unary CPU/req, SQLite ledger vs in memory", "≤ 1.05×", "switchyard", 1.05),
        ("unary CPU/req, PostgreSQL ledger vs in memory", "≤ 1.10×", POSTGRES, 1.10),
    ):
        rounds, reference = paired.get(row) or [], paired.get(MEMORY) or []
        if not rounds or not reference:
            found.append(Check(name, goal, "not measured", None))
            continue
        a, b = statistics.median(rounds), statistics.median(reference)
        spread = ", ".join(f"{x / y:.3f}" for x, y in zip(rounds, reference, strict=False))
        found.append(Check(name, goal, f"{a / b:.3f}× (rounds {spread})", a / b <= limit))
    auth = results.get("auth") or {}
    resolver_us = _get(auth, "api_key_us")
    baseline_us = _get(auth, "caller_header_us")
    found.append(
        Check(
            "authentication CPU per call, API key, warm cache (in process)",
            "≤ 15 µs",
            "not measured"
            if resolver_us is None
            else f"{resolver_us:.1f} µs (no auth: {baseline_us or 0:.1f} µs)",
            None if resolver_us is None else resolver_us <= 15,
        )
    )
    rounds, reference = paired.get(AUTH) or [], paired.get("switchyard") or []
    if rounds and reference:
        a, b = statistics.median(rounds), statistics.median(reference)
        found.append(
            Check(
                "unary CPU/req, API keys vs no auth (paired rounds)",
                "report only",
                f"{a / b:.3f}× ({(a - b) * 1000:+.0f} µs)",
                None,
            )
        )
    redis = _row(rows, REDIS)
    vs_floor("unary CPU/req with Redis (shared state) vs floor", "≤ 1.6×", REDIS, 1.6, CPU)
    added("c=1 p50 added over floor, with Redis", "≤ 0.6 ms", REDIS, 0.6, "c1_p50_ms")
    two = rows.get(REDIS_WORKERS) if rows.get(REDIS_WORKERS, {}).get("available", True) else None
    a, b = _get(two, "saturation_rps"), _get(redis, "saturation_rps")
    found.append(
        Check(
            "saturation, 2 workers vs 1 (with Redis; load generator and relay share the cores)",
            "report only",
            "not measured" if a is None or not b else f"{a / b:.2f}× ({a:,.0f} vs {b:,.0f} req/s)",
            None,
        )
    )
    rate = _get(ledger, "insert", "calls_per_s")
    found.append(
        Check(
            "ledger inserts into PostgreSQL, one gateway",
            "≥ 5,000 calls/s",
            "not measured" if rate is None else f"{rate:,.0f} calls/s",
            None if rate is None else rate >= 5000,
        )
    )
    p99 = _get(ledger, "get_usage", "p99_ms")
    rows_in = _get(ledger, "get_usage", "rows")
    found.append(
        Check(
            "GetUsage p99, one tenant's 24 h"
            + ("" if rows_in is None else f", {rows_in:,.0f} calls in PostgreSQL"),
            "< 50 ms",
            "not measured" if p99 is None else f"{p99:.1f} ms",
            None if p99 is None else p99 < 50 and (rows_in or 0) >= 1_000_000,
        )
    )

    idle = (subject or {}).get("idle", {})
    biggest = max(idle, key=int) if idle else None
    if biggest is None:
        found.append(Check("RSS with 10k idle streams", "< 1 GB", "not measured", None))
    else:
        figures = idle[biggest]
        complete = figures["failed"] == 0
        note = "" if complete else f", only {figures['opened']} opened"
        floor_rss = _get(floor, "idle", biggest, "rss_mb")
        reference = "" if floor_rss is None else f" (floor {floor_rss:.0f} MB)"
        found.append(
            Check(
                f"RSS with {int(biggest):,} idle streams",
                "< 1 GB, all open",
                f"{figures['rss_mb']:.0f} MB{note}{reference}",
                complete and figures["rss_mb"] < 1024,
            )
        )
    soak = results.get("soak")
    if soak:
        found.append(
            Check(
                f"RSS flat over a {soak['seconds'] / 60:.0f}-min soak",
                "within 5%",
                f"{soak['growth']:+.1%}",
                soak["growth"] <= 0.05 and soak["errors"] == 0,
            )
        )
    else:
        found.append(Check("RSS flat over a 5-min soak", "within 5%", "not run (SOAK=1)", None))
    sustained = (subject or {}).get("sustained", {})
    p50, p99 = _get(sustained, "latency_ms", "p50"), _get(sustained, "latency_ms", "p99")
    f50, f99 = (
        _get(floor, "sustained", "latency_ms", "p50"),
        _get(floor, "sustained", "latency_ms", "p99"),
    )
    reference = "" if not f50 or f99 is None else f"; floor {f99 / f50:.2f}×"
    if p50 is None or p99 is None:
        found.append(Check("p99 < 3× p50 at 80% of saturation", "< 3×", "not measured", None))
    else:
        found.append(
            Check(
                f"p99 < 3× p50 at 80% of saturation ({sustained['rate']:.0f}/s)",
                "< 3×",
                f"{p99 / p50:.2f}× ({p50:.2f}/{p99:.2f} ms{reference})",
                p99 / p50 < 3 and not sustained.get("errors"),
            )
        )
    return found


def noise_text(results: dict[str, Any]) -> str:
    """A warning naming the phases during which other processes used the machine."""
    tainted = []
    for name, row in results["rows"].items():
        for phase, figures in row.items():
            if isinstance(figures, dict) and figures.get("foreign_share", 0) > 0.10:
                tainted.append(f"{name} {phase} {figures['foreign_share']:.0%}")
    for name, pair in (results.get("pairs") or {}).items():
        for index, share in enumerate(pair.get("foreign_share") or []):
            if share > 0.10:
                tainted.append(f"{name} paired round {index + 1} {share:.0%}")
    if not tainted:
        return "Machine: quiet (no phase saw over 10% of its CPU used by other processes)."
    return (
        f"Machine: BUSY: other processes used over 10% of the CPU in {len(tainted)} phases"
        f" ({', '.join(tainted)}). CPU per request stays valid; latencies of those"
        " phases are not."
    )


def checks_text(results: dict[str, Any]) -> str:
    """The checks as printed lines, headed by the subject's name."""
    subject = results["subject"]
    row = results["rows"].get(subject, {})
    if not row.get("available") and not paired_used(results):
        head = f"Targets for {subject}: {row.get('reason', 'not available')}; nothing to check"
        return head
    lines = [f"Targets for {subject} (same run, reference {FLOOR} / {PEER}):"]
    if paired_used(results):
        count = len(results["pairs"][FLOOR][CPU])
        lines.append(
            f"  (against the floor: the median over {count} paired round(s) of each round's"
            " ratio or difference, the floor and the gateways running side by side and taking"
            " turns; stream CPU/token, LiteLLM and RSS: from the rows)"
        )
    else:
        lines.append(
            "  (against the floor: from the rows, measured minutes apart; no paired rounds in"
            " this run, so the machine's drift between rows is in these ratios)"
        )
    width = max(len(c.name) for c in checks(results))
    for check in checks(results):
        lines.append(f"  {check.mark} {check.name:<{width}}  {check.goal:<16} {check.value}")
    paired = pairs_text(results)
    if paired:
        lines.append(paired)
    drivers = (results.get("ledger") or {}).get("drivers_cpu_us_per_row")
    if drivers:
        lines.append(
            "Ledger drivers, CPU µs per row in batches of 500 (used: asyncpg COPY; for SQLite,"
            " sqlite3 on a thread):"
        )
        lines.extend(f"  {name:<22} {value:6.2f}" for name, value in drivers.items())
    return "\n".join(lines)


PAIRS_COLUMNS = (
    ("CPU ms/req", CPU),
    ("c=1 p50 ms", "c1_p50_ms"),
    ("c=1 p99 ms", "c1_p99_ms"),
    ("TTFT p50 ms", "ttft_p50_ms"),
)


def pairs_text(results: dict[str, Any]) -> str:
    """The paired rounds' figures, one per round, each target on a line (empty if none)."""
    pairs = results.get("pairs") or {}
    if not pairs:
        return ""
    names = [n for n in ORDER if n in pairs] + [n for n in pairs if n not in ORDER]
    width = max(len(n) for n in names)
    cells: dict[str, list[str]] = {}
    for name in names:
        pair = pairs[name]
        if pair.get("available"):
            cells[name] = [
                " ".join(_num(v if isinstance(v, int | float) else None) for v in pair[key])
                if key in pair
                else "–"
                for _, key in PAIRS_COLUMNS
            ]
    widths = [
        max([len(title)] + [len(c[i]) for c in cells.values()])
        for i, (title, _) in enumerate(PAIRS_COLUMNS)
    ]
    head = "  ".join(t.ljust(w) for (t, _), w in zip(PAIRS_COLUMNS, widths, strict=True))
    lines = ["Paired rounds (one figure per round, in round order):", f"  {'':<{width}}  {head}"]
    for name in names:
        if name not in cells:
            lines.append(f"  {name:<{width}}  {pairs[name].get('reason', 'not available')}")
            continue
        row = "  ".join(c.ljust(w) for c, w in zip(cells[name], widths, strict=True))
        lines.append(f"  {name:<{width}}  {row}".rstrip())
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """One PNG: CPU per unary request, CPU per streamed token, and c=1 latency CDFs."""
    import matplotlib  # noqa: PLC0415 - heavy, and only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = {n: results["rows"][n] for n in ORDER if results["rows"].get(n, {}).get("available")}
    names = list(rows)
    colours = {
        "relay": "#9e9e9e",
        FLOOR: "#1f77b4",
        "floor(httpx-aiohttp)": "#6baed6",
        "floor(httpx)": "#c6dbef",
        "switchyard": "#d62728",
        "switchyard(otlp)": "#8c2d2d",
        "switchyard(otlp, default keep)": "#c44e52",
        PEER: "#ff7f0e",
    }
    figure, (cpu_ax, tok_ax, cdf_ax) = plt.subplots(1, 3, figsize=(17, 5.6))
    figure.suptitle(
        f"Switchyard benchmark, {results['date']}: {results['machine']['cpus']} cores, loopback,"
        f" same run (lower is better)",
        fontsize=13,
    )

    def bars(ax: Any, key: str, unit: str, title: str) -> None:
        values = [_get(rows[n], key) or 0.0 for n in names]
        drawn = ax.barh(names, values, color=[colours.get(n, "#555555") for n in names])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(unit)
        ax.bar_label(drawn, fmt="%.3g", padding=3)
        ax.margins(x=0.2)
        if max(values, default=0) > 20 * max(
            min(v for v in values if v) if any(values) else 1, 1e-9
        ):
            ax.set_xscale("log")
        ax.grid(axis="x", alpha=0.3)

    bars(cpu_ax, "unary_cpu_ms", "ms of CPU per request (user+sys)", "Unary: CPU per request")
    floor_cpu = _get(rows.get(FLOOR), "unary_cpu_ms")
    if floor_cpu:
        cpu_ax.axvline(1.3 * floor_cpu, color="#d62728", linestyle="--", linewidth=1)
        cpu_ax.text(
            1.3 * floor_cpu, len(names) - 0.45, " target: 1.3× floor", color="#d62728", fontsize=8
        )
    bars(tok_ax, "stream_cpu_us_per_token", "µs of CPU per token", "Streaming: CPU per token")
    for name in names:
        quantiles = _get_quantiles(rows[name])
        if quantiles:
            cdf_ax.plot(
                quantiles,
                [q / 100 for q in range(101)],
                label=name,
                color=colours.get(name, "#555555"),
            )
    cdf_ax.set_xscale("log")
    cdf_ax.set_title("Unary latency at concurrency 1 (client side)")
    cdf_ax.set_xlabel("latency, ms (log)")
    cdf_ax.set_ylabel("fraction of requests ≤ x")
    cdf_ax.grid(alpha=0.3, which="both")
    if cdf_ax.get_lines():  # none when only the pairs step ran
        cdf_ax.legend(loc="lower right", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _get_quantiles(row: dict[str, Any]) -> list[float] | None:
    quantiles = row.get("c1", {}).get("latency_ms", {}).get("quantiles")
    return quantiles if isinstance(quantiles, list) else None


def main(argv: list[str] | None = None) -> None:
    """Re-print the table and checks of a saved run and redraw its chart."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m bench.report bench/results/<date>.json")
    path = Path(args[0])
    results = json.loads(path.read_text())
    print(table(results))
    print()
    print(checks_text(results))
    chart(results, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
