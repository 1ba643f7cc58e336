"""The fuzzer's driver and oracle: generated calls against a running gateway, for a time budget.

Every RPC the gateway process serves is a `Target` (GatewayService,
AdminService, health and reflection, read from their descriptors), plus
method paths nobody serves. A `Case` is one call: a target, what it sends
(a message built from the descriptor, or raw bytes no stub would send), its
metadata, deadline, cancellation and compression. Calls go through generic
callables with identity (de)serializers, so the bytes on the wire are exactly
the case's, and every answer is decoded here as the contract's type.

The oracle, per call: the status is OK or one of `DOCUMENTED` (UNIMPLEMENTED
only for a method nobody serves), never UNKNOWN or INTERNAL; the message
holds no traceback, no Python type and no secret; an answer decodes as its
type; no call goes unanswered for `PATIENCE` seconds. What breaks a rule is a
`Finding`, kept (the first input of each kind) and counted, and the run goes
on: one run reports every kind of failure it met, each with the exact input
to paste into a regression test.

The budget is time, not examples: Hypothesis draws rounds of `ROUND` cases,
round n with seed `seed + n`, until the time is spent, so SWITCHYARD_FUZZ_SEED
replays the same inputs (the server's answers can still differ: it keeps
state, such as the tenants and keys the run created).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from switchyard.admin.v1 import admin_pb2
from switchyard.v1 import gateway_pb2

from tests.fuzz import strategies as gen

Code = grpc.StatusCode
# The statuses a caller may get, as the README's Errors table documents them.
DOCUMENTED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.RESOURCE_EXHAUSTED,
        Code.FAILED_PRECONDITION,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
        Code.UNAVAILABLE,
        Code.DEADLINE_EXCEEDED,
        Code.CANCELLED,
        Code.OUT_OF_RANGE,
        Code.ALREADY_EXISTS,
    }
)
# A method nobody serves: UNIMPLEMENTED, or what the transport says first (the deadline, a
# cancel, a message over the size limit).
FOR_UNKNOWN = frozenset(
    {Code.UNIMPLEMENTED, Code.DEADLINE_EXCEEDED, Code.CANCELLED, Code.RESOURCE_EXHAUSTED}
)
FORBIDDEN_TEXT = ("Traceback", "<class '", "DecodeError", 'File "')
EMBEDDED_RELAY_KEY = re.compile(r"sim-[0-9a-f]{16}")  # the embedded simulator's key (app.py)
PATIENCE = 30.0  # seconds; the relay answers at once, so a call this slow is stuck
ROUND = 100  # cases per Hypothesis round


@dataclass(frozen=True, slots=True)
class Target:
    """One RPC of the served surface (or, with no request type, a method nobody serves)."""

    path: str
    request: type[Message] | None
    response: type[Message] | None
    client_streaming: bool = False
    server_streaming: bool = False
    endless: bool = False  # streams until cancelled (health's Watch)
    served: bool = True  # False: declared by its service, implemented by nobody (UNIMPLEMENTED)

    @property
    def name(self) -> str:
        """Service/Method, short: how the summary names it."""
        if self.request is None:
            return "(unknown method)"
        service, method = self.path.strip("/").split("/")
        return f"{service.rsplit('.', 1)[1]}/{method}"


# Declared by health's .proto, not implemented by grpcio-health-checking's asyncio servicer.
NOT_SERVED = frozenset({"grpc.health.v1.Health.List"})


def served_targets() -> tuple[Target, ...]:
    """Every method of every service the gateway process serves, from the descriptors."""
    services = (
        gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    )
    return tuple(
        Target(
            f"/{service.full_name}/{method.name}",
            GetMessageClass(method.input_type),
            GetMessageClass(method.output_type),
            method.client_streaming,
            method.server_streaming,
            endless=method.full_name == "grpc.health.v1.Health.Watch",
            served=method.full_name not in NOT_SERVED,
        )
        for service in services
        for method in service.methods
    )


UNKNOWN = Target("", None, None)
TARGETS = served_targets()
# Key ids this run learned stand in for the generated ones in these requests.
_KEY_ID_REQUESTS = frozenset(
    {"/switchyard.admin.v1.AdminService/RevokeKey", "/switchyard.admin.v1.AdminService/RotateKey"}
)


@dataclass(frozen=True, slots=True)
class Case:
    """One generated call."""

    target: Target
    path: str
    payloads: tuple[bytes, ...]  # one, unless the method takes a stream
    structured: bool  # built from the descriptor (else raw bytes)
    shape: gen.Shape
    learned: int | None = None  # use the n-th key id learned, when there is one

    def replay(self) -> str:
        """The call as Python literals, to paste into a regression test."""
        payloads = tuple(p if len(p) <= 2048 else p[:2048] + b"...(cut)" for p in self.payloads)
        shape = self.shape
        return (
            f"path={self.path!r} payloads={payloads!r} metadata={shape.metadata!r}"
            f" timeout={shape.timeout!r} cancel_after={shape.cancel_after!r}"
            f" read_limit={shape.read_limit!r} compression={shape.compression!r}"
        )


def _case(target: Target, admin_key: str) -> st.SearchStrategy[Case]:
    if target.request is None:
        paths = gen.unknown_paths()
        payload = st.one_of(st.binary(max_size=64), st.sampled_from(gen.CORRUPT))
        return st.builds(
            lambda path, data, shape: Case(target, path, (data,), False, shape),
            paths,
            payload,
            gen.shapes(admin_key),
        )
    admin = target.path.startswith("/switchyard.admin.")
    descriptor: Descriptor = target.request.DESCRIPTOR  # type: ignore[assignment]
    structured = gen.messages(descriptor).map(lambda message: (True, gen.serialize(message)))
    raw = gen.raw_payloads(descriptor).map(lambda data: (False, data))
    one = st.one_of(structured, raw)
    sent = (
        st.lists(one, min_size=1, max_size=3)
        if target.client_streaming
        else one.map(lambda item: [item])
    )
    learned = (
        st.none()
        if target.path not in _KEY_ID_REQUESTS
        else st.one_of(st.none(), st.integers(0, 50))
    )
    return st.builds(
        lambda items, shape, index: Case(
            target,
            target.path,
            tuple(data for _, data in items),
            all(flag for flag, _ in items),
            shape,
            index,
        ),
        sent,
        gen.shapes(admin_key, admin=admin),
        learned,
    )


def cases(admin_key: str, targets: Sequence[Target] = TARGETS) -> st.SearchStrategy[Case]:
    """Calls over every target: the gateway's RPCs three times as often as the rest."""
    choices = [
        (3 if target.path.startswith("/switchyard.v1.") else 1, _case(target, admin_key))
        for target in (*targets, UNKNOWN)
    ]
    return gen.weighted(*choices)


@dataclass(slots=True)
class Finding:
    """A kind of answer that breaks the oracle: its first input, and how often it came."""

    why: str
    case: Case
    code: str
    details: str
    count: int = 1

    def __str__(self) -> str:
        return (
            f"{self.why} ({self.count}x): {self.case.target.name} -> {self.code}:"
            f" {self.details[:300]!r}\n    replay: {self.case.replay()}"
        )


@dataclass(slots=True)
class Outcome:
    """What one call came back with."""

    code: Code
    details: str
    responses: list[bytes] = field(default_factory=list)
    stuck: bool = False


@dataclass(slots=True)
class Report:
    """What a run did and found."""

    seed: int
    seconds: float = 0.0
    calls: int = 0
    rounds: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    busy: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # seconds
    by_target: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    findings: dict[str, Finding] = field(default_factory=dict)
    health_failures: list[str] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    rss_peak_kb: int = 0

    def summary(self) -> str:
        """One line: calls, seconds, the codes seen, memory, and how to replay."""
        codes = ", ".join(f"{code} {n}" for code, n in self.codes.most_common())
        return (
            f"fuzz: {self.calls} calls in {self.seconds:.1f} s ({self.rounds} rounds,"
            f" SWITCHYARD_FUZZ_SEED={self.seed}); codes: {codes}; server RSS"
            f" {self.rss_start_kb / 1024:.0f} -> {self.rss_end_kb / 1024:.0f} MB (peak"
            f" {self.rss_peak_kb / 1024:.0f}); findings: {len(self.findings)}"
        )


def _normalised(details: str) -> str:
    """A status message with its numbers and ids blurred: one kind of answer, one key."""
    return re.sub(r"[0-9a-f]{8,}|\d+", "#", details)[:80]


class Fuzzer:
    """Makes the calls of cases on one channel and judges every answer."""

    def __init__(self, channel: grpc.Channel, secrets: Sequence[str], report: Report) -> None:
        self._channel = channel
        self._secrets = tuple(secret for secret in secrets if secret)
        self.report = report
        self.key_ids: list[str] = []  # learned from CreateKey and RotateKey answers
        self.key_tokens: list[str] = []  # the whole keys those answers carried
        self._health = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    # -- one call ---------------------------------------------------------------------------

    def run(self, case: Case) -> None:
        """Make the case's call and judge its answer."""
        case = self._with_learned(case)
        metadata = tuple(
            (key, self.key_tokens[self.report.calls % len(self.key_tokens)])
            if value == gen.LEARNED_KEY and self.key_tokens
            else (key, value)
            for key, value in case.shape.metadata
        )
        started = time.monotonic()
        outcome = self._call(case, metadata)
        report = self.report
        report.busy[case.target.name] += time.monotonic() - started
        report.calls += 1
        report.codes[outcome.code.name] += 1
        report.by_target[case.target.name][outcome.code.name] += 1
        self._judge(case, outcome)

    def _with_learned(self, case: Case) -> Case:
        if case.learned is None or not self.key_ids or not case.structured:
            return case
        assert case.target.request is not None
        try:
            message = case.target.request.FromString(case.payloads[0])
        except DecodeError:
            return case
        message.key_id = self.key_ids[case.learned % len(self.key_ids)]  # type: ignore[attr-defined]
        return Case(
            case.target, case.path, (message.SerializeToString(),), True, case.shape, case.learned
        )

    def _call(self, case: Case, metadata: tuple[tuple[str, Any], ...]) -> Outcome:
        target, shape = case.target, case.shape
        options = {
            "timeout": shape.timeout,
            "metadata": metadata,
            "compression": shape.compression,
        }
        kind = ("stream" if target.client_streaming else "unary") + (
            "_stream" if target.server_streaming else "_unary"
        )
        callable_ = getattr(self._channel, kind)(
            case.path,
            request_serializer=None,
            response_deserializer=None,  # bytes as they are
        )
        request: Any = iter(case.payloads) if target.client_streaming else case.payloads[0]
        if not target.server_streaming:
            return _unary(callable_.future(request, **options), shape.cancel_after)
        return _stream(callable_(request, **options), shape, endless=target.endless)

    # -- the oracle -------------------------------------------------------------------------

    def _judge(self, case: Case, outcome: Outcome) -> None:
        code, details = outcome.code, outcome.details
        if outcome.stuck:
            self._found("no answer within the fuzzer's patience", case, outcome)
            return
        target = case.target
        allowed = DOCUMENTED if target.request is not None and target.served else FOR_UNKNOWN
        if code not in allowed:
            self._found("an undocumented status", case, outcome)
        leaked = [text for text in FORBIDDEN_TEXT if text in details]
        if EMBEDDED_RELAY_KEY.search(details) or any(s in details for s in self._secrets):
            leaked.append("a secret")
        if leaked:
            self._found(f"the message holds {', '.join(leaked)}", case, outcome)
        if code is Code.OK and case.target.response is not None:
            self._learn(case, outcome.responses)

    def _learn(self, case: Case, responses: list[bytes]) -> None:
        """Decode each answer as its type; keep the keys CreateKey and RotateKey made."""
        assert case.target.response is not None
        for data in responses:
            try:
                answer = case.target.response.FromString(data)
            except DecodeError:
                self._found(
                    "an answer that is not its message type", case, Outcome(Code.OK, data.hex())
                )
                return
            if (
                isinstance(answer, admin_pb2.CreateKeyResponse | admin_pb2.RotateKeyResponse)
                and len(self.key_ids) < 64
            ):
                self.key_ids.append(answer.key.key_id)
                self.key_tokens.append(f"Bearer {answer.secret}")

    def _found(self, why: str, case: Case, outcome: Outcome) -> None:
        key = f"{why} | {case.target.name} | {outcome.code.name} | {_normalised(outcome.details)}"
        known = self.report.findings.get(key)
        if known is None:
            self.report.findings[key] = Finding(why, case, outcome.code.name, outcome.details)
        else:
            known.count += 1

    # -- health -----------------------------------------------------------------------------

    def check_health(self) -> None:
        """Health says SERVING, within 5 s; anything else is recorded."""
        try:
            answer = self._health(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            self.report.health_failures.append(f"{error.code().name}: {error.details()}")
            return
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            self.report.health_failures.append(
                health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            )


def _unary(future: Any, cancel_after: float | None) -> Outcome:
    if cancel_after is not None:
        try:
            future.result(timeout=cancel_after)
        except grpc.FutureTimeoutError:
            future.cancel()
        except (grpc.RpcError, grpc.FutureCancelledError):
            pass
    try:
        return Outcome(Code.OK, "", [future.result(timeout=PATIENCE)])
    except grpc.FutureTimeoutError:
        future.cancel()
        return Outcome(Code.CANCELLED, "", stuck=True)
    except grpc.FutureCancelledError:
        return Outcome(Code.CANCELLED, "cancelled by the fuzzer")
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "")


def _stream(call: Any, shape: gen.Shape, *, endless: bool) -> Outcome:
    responses: list[bytes] = []
    stuck = threading.Event()

    def give_up() -> None:
        stuck.set()
        call.cancel()

    # An endless stream (Watch) is read for a moment, then cancelled: that is not being stuck.
    watchdog = threading.Timer(0.03 if endless else PATIENCE, call.cancel if endless else give_up)
    timers = [watchdog]
    if shape.cancel_after is not None:
        timers.append(threading.Timer(shape.cancel_after, call.cancel))
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        for response in call:
            responses.append(response)
            if shape.read_limit is not None and len(responses) >= shape.read_limit:
                call.cancel()
                break
        code, details = call.code(), call.details() or ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    finally:
        for timer in timers:
            timer.cancel()
    return Outcome(code, details, responses, stuck=stuck.is_set())


def fuzz(
    channel: grpc.Channel,
    *,
    seconds: float,
    seed: int,
    admin_key: str,
    rss_kb: Callable[[], int],
) -> Report:
    """Fuzz for `seconds` from `seed`; the report of what was called and found."""
    report = Report(seed)
    fuzzer = Fuzzer(channel, (admin_key,), report)
    strategy = cases(admin_key)
    started = time.monotonic()
    stop_at = started + seconds
    warm_at = started + min(5.0, seconds / 10)  # the first calls load code and fill pools
    next_sample = started

    def one(case: Case) -> None:
        nonlocal next_sample
        now = time.monotonic()
        if now >= stop_at:
            return
        fuzzer.run(case)
        if now >= next_sample:  # about once a second: memory, and health from outside
            next_sample = now + 1.0
            rss = rss_kb()
            report.rss_peak_kb = max(report.rss_peak_kb, rss)
            if not report.rss_start_kb and now >= warm_at:
                report.rss_start_kb = rss
            fuzzer.check_health()

    while time.monotonic() < stop_at:
        round_ = hypothesis_seed(seed + report.rounds)(
            settings(
                max_examples=ROUND,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(given(strategy)(one))
        )
        round_()
        report.rounds += 1
    report.seconds = time.monotonic() - started
    report.rss_end_kb = rss_kb()
    report.rss_peak_kb = max(report.rss_peak_kb, report.rss_end_kb)
    if not report.rss_start_kb:
        report.rss_start_kb = report.rss_end_kb
    fuzzer.check_health()
    return report
