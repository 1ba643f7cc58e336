"""Switchyard for Python services: typed sync and asyncio clients, and the CLI.

Example::

    from switchyard_client import Client

    with Client("127.0.0.1:50051", caller="search") as client:
        answer = client.query("What is the capital of France?", task="fast")
        print(answer.text, answer.model, answer.usage.output_tokens, answer.cost)

        with client.stream("Compare quicksort and mergesort") as stream:
            for text in stream:
                print(text, end="", flush=True)
        print(stream.summary.cost, len(stream.summary.attempts))

        weather = Tool("get_weather", "The weather in a city", {"type": "object", ...})
        answer = client.query("Weather in Lisbon?", tools=[weather])
        while answer.tool_calls:
            results = {call.id: get_weather(**call.arguments) for call in answer.tool_calls}
            answer = client.reply(answer, results)
        print(answer.text)

Failures raise :class:`SwitchyardError` subclasses that keep the gRPC
status, the gateway's request id, the retry delay and every attempt.
"""

from switchyard_client import events
from switchyard_client._version import __version__
from switchyard_client.admin import AdminClient, NewKey
from switchyard_client.aio import AsyncClient
from switchyard_client.client import Client
from switchyard_client.connection import TLS
from switchyard_client.conversation import (
    Image,
    JsonSchema,
    Message,
    Reasoning,
    RedactedReasoning,
    Tool,
    ToolCall,
    ToolResult,
)
from switchyard_client.errors import (
    AlreadyExistsError,
    AuthenticationError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    SwitchyardError,
    UnavailableError,
    UnimplementedError,
)
from switchyard_client.requests import CacheMode, QueryOptions, ReasoningEffort, Task
from switchyard_client.results import Answer, Attempt, Route, Summary, Usage, usd
from switchyard_client.stream import AsyncTextStream, TextStream

__all__ = [
    "TLS",
    "AdminClient",
    "AlreadyExistsError",
    "Answer",
    "AsyncClient",
    "AsyncTextStream",
    "Attempt",
    "AuthenticationError",
    "CacheMode",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "Image",
    "InternalError",
    "InvalidRequestError",
    "JsonSchema",
    "Message",
    "NewKey",
    "NotFoundError",
    "PermissionDeniedError",
    "QueryOptions",
    "RateLimitedError",
    "Reasoning",
    "ReasoningEffort",
    "RedactedReasoning",
    "Route",
    "Summary",
    "SwitchyardError",
    "Task",
    "TextStream",
    "Tool",
    "ToolCall",
    "ToolResult",
    "UnavailableError",
    "UnimplementedError",
    "Usage",
    "__version__",
    "events",
    "usd",
]
