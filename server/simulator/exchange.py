"""One accepted request, answered: delays, the fault asked for, every byte on the socket.

The wire modules say *what* bytes to send; this module decides *when* and
*whether*: it waits the planned time to first token, paces tokens, and
carries out the fault (an error status, a stall, a reset, a truncated or
decorated stream). Frames are queued and written in one go until the next
pause, so with ``latency_scale=0`` a whole stream leaves in one write (and
``asyncio.sleep`` is never called), while with delays each token leaves on
time. Usage is recorded just before the bytes that report it are written
and taken back if the write fails, so the stats hold what clients received.
An answer with tool calls, thinking or JSON comes from the wire as frames
(``Wire.stream_answer``); each frame carrying tokens is one step, paced and
cut by faults (``after=N`` counts steps) exactly like a text token.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Never

from aiohttp import web

from server.simulator.content import Answer
from server.simulator.faults import MID_STREAM_FAULTS, FaultKind, FaultPlan
from server.simulator.profiles import Timing
from server.simulator.stats import ResponseTally
from server.simulator.wire import Call, ChatRequest, ErrorKind, Frame, Wire

JSON = "application/json"


def error_response(
    wire: Wire,
    kind: ErrorKind,
    message: str,
    headers: Mapping[str, str] | None = None,
    param: str | None = None,
) -> web.Response:
    """An HTTP error in ``wire``'s format; ``param`` names the field at fault."""
    body = wire.error_body(kind, message, param)
    return web.Response(status=kind.status, body=body, content_type=JSON, headers=headers)


def retry_headers(plan: FaultPlan, now: datetime) -> dict[str, str]:
    """The ``retry-after`` family of headers a fault asked for."""
    headers = {}
    if plan.retry_after is not None:
        headers["retry-after"] = plan.retry_after
    if plan.retry_after_date is not None:
        headers["retry-after"] = format_datetime(
            now + timedelta(seconds=plan.retry_after_date), usegmt=True
        )
    if plan.retry_after_ms is not None:
        headers["retry-after-ms"] = plan.retry_after_ms
    return headers


async def _forever() -> Never:
    """Wait until cancelled: by the client hanging up, or by the simulator stopping."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable: the future is never resolved")


def _reset(request: web.BaseRequest) -> None:
    """Abort the connection with a TCP RST, as a crashed peer or a proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(frozen=True, slots=True)
class Script:
    """Everything decided about one response before a byte of it is sent."""

    chat: ChatRequest
    call: Call
    answer: Answer
    plan: FaultPlan
    timing: Timing


class Exchange:
    """Produces the response to one request that passed validation and admission."""

    __slots__ = (
        "_answer",
        "_call",
        "_chat",
        "_headers",
        "_pending",
        "_plan",
        "_request",
        "_response",
        "_tally",
        "_timing",
        "_wire",
    )

    def __init__(
        self, request: web.BaseRequest, wire: Wire, script: Script, tally: ResponseTally
    ) -> None:
        self._request = request
        self._wire = wire
        self._chat = script.chat
        self._call = script.call
        self._answer = script.answer
        self._plan = script.plan
        self._timing = script.timing
        self._tally = tally
        self._pending: list[Frame] = []
        self._response = web.StreamResponse()
        self._headers = {"x-simulator-ttft-ms": f"{script.timing.first_token_s * 1000:.3f}"}

    async def run(self) -> web.StreamResponse:
        """Answer, fault included; returns the (already written) response."""
        plan = self._plan
        if plan.fault is FaultKind.STALL:
            await _forever()
        error = plan.error
        if error is not None:
            if plan.latency_ms is not None:
                await asyncio.sleep(plan.latency_ms / 1000)
            message = self._wire.default_message(
                error, model=self._call.model, input_tokens=self._call.input_tokens
            )
            return error_response(
                self._wire, error, message, retry_headers(plan, datetime.now(UTC))
            )
        try:
            if self._chat.stream:
                await self._stream()
            else:
                await self._unary()
        except ConnectionError:
            pass  # the client hung up; aiohttp notices too and drops the connection
        return self._response

    async def _unary(self) -> None:
        fault = self._plan.fault
        if fault is FaultKind.RESET:
            await self._pause(self._timing.first_token_s)
            _reset(self._request)
            await _forever()
        body, report = self._wire.unary_body(
            self._call, self._answer, usage=fault is not FaultKind.NO_USAGE
        )
        if fault is FaultKind.STALL_MID:  # headers, then a body that never comes
            self._response = web.StreamResponse(headers=self._headers)
            self._response.content_type = JSON
            self._response.content_length = len(body)
            await self._response.prepare(self._request)
            await _forever()
        await self._pause(self._timing.unary_s(self._answer.steps))
        self._response = web.Response(body=body, content_type=JSON, headers=self._headers)
        state = self._tally.checkpoint()
        self._tally.record(report, self._answer.steps)
        try:
            await self._response.prepare(self._request)
            await self._response.write_eof()
        except ConnectionError:
            self._tally.restore(state)
            raise

    async def _stream(self) -> None:
        wire, call, chat = self._wire, self._call, self._chat
        plan, timing = self._plan, self._timing
        response = self._response
        response.headers.update(self._headers)
        response.headers["cache-control"] = "no-cache"
        response.content_type = "text/event-stream"
        if plan.fault is FaultKind.NO_DONE:
            response.force_close()  # end the body, then the TCP connection, cleanly
        await response.prepare(self._request)
        if self._answer.extras is not None:
            await self._stream_answer()
            return
        self._queue(wire.stream_open(call, chat))

        tokens = self._answer.tokens
        cut = min(plan.after, len(tokens)) if plan.fault in MID_STREAM_FAULTS else None
        extras = self._decorations()
        for index, token in enumerate(tokens[:cut]):
            await self._pause(timing.first_token_s if index == 0 else timing.token_interval_s)
            self._queue((*extras, wire.stream_token(call, chat, token)))

        if cut is not None:
            await self._pause(timing.first_token_s if cut == 0 else timing.token_interval_s)
            await self._break(plan.fault)
            return
        self._queue(extras)
        self._queue(
            wire.stream_close(
                call,
                chat,
                self._answer,
                usage=plan.fault is not FaultKind.NO_USAGE,
                terminator=plan.fault is not FaultKind.NO_DONE,
            )
        )
        await self._flush()
        await response.write_eof()

    async def _stream_answer(self) -> None:
        """Stream an answer with tool calls, thinking or JSON: the wire lays out every frame,
        this paces its steps (frames carrying tokens) exactly as it paces text tokens."""
        plan, timing = self._plan, self._timing
        body, close = self._wire.stream_answer(
            self._call,
            self._chat,
            self._answer,
            usage=plan.fault is not FaultKind.NO_USAGE,
            terminator=plan.fault is not FaultKind.NO_DONE,
        )
        cut = None
        if plan.fault in MID_STREAM_FAULTS:
            cut = min(plan.after, sum(1 for frame in body if frame.tokens))
        extras = self._decorations()
        sent = 0
        for frame in body:
            if not frame.tokens:
                self._queue((frame,))
                continue
            if sent == cut:
                break
            await self._pause(timing.first_token_s if sent == 0 else timing.token_interval_s)
            self._queue((*extras, frame))
            sent += 1
        if cut is not None:
            await self._pause(timing.first_token_s if cut == 0 else timing.token_interval_s)
            await self._break(plan.fault)
            return
        self._queue(extras)
        self._queue(close)
        await self._flush()
        await self._response.write_eof()

    def _decorations(self) -> list[Frame]:
        """Frames a fault sends before every token: keep-alives, empty choices."""
        extras: list[Frame] = []
        plan, wire = self._plan, self._wire
        if plan.fault is FaultKind.PING:
            extras.append(wire.keepalive())
        if plan.fault is FaultKind.EMPTY_CHOICES and (
            empty := wire.empty_choices(self._call, self._chat)
        ):
            extras.append(empty)
        return extras

    async def _break(self, fault: FaultKind | None) -> None:
        """Carry out a mid-stream fault once the tokens before it are out."""
        if fault is FaultKind.SSE_ERROR:
            kind = ErrorKind.OVERLOADED
            message = self._wire.default_message(kind, model=self._call.model)
            self._queue((self._wire.stream_error(kind, message),))
            await self._flush()
            await self._response.write_eof()
            return
        await self._flush()
        if fault is FaultKind.RESET:
            _reset(self._request)
        await _forever()

    def _queue(self, frames: Iterable[Frame]) -> None:
        self._pending.extend(frames)

    async def _flush(self) -> None:
        """Write queued frames in one go, recording the usage they report."""
        frames, self._pending = self._pending, []
        if not frames:
            return
        state = self._tally.checkpoint()
        for frame in frames:
            self._tally.record(frame.usage, frame.tokens)
        try:
            await self._response.write(b"".join(frame.data for frame in frames))
        except ConnectionError:
            self._tally.restore(state)
            raise

    async def _pause(self, seconds: float) -> None:
        """Send what is queued, then wait; no sleep at all when there is nothing to wait."""
        if seconds > 0:
            await self._flush()
            await asyncio.sleep(seconds)
