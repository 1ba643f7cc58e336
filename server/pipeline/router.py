"""Routing: which model answers a request, and why.

`Router.decide` is pure: the same request and catalog always give the same
decision, which is why the Route RPC can promise that Query would do the
same. The rules, in order:

1. an explicit `model` wins (an unknown one is refused, listing the served
   models, before anything is sent to the relay);
2. else an explicit `task` picks that task's default model;
3. else the complexity of the user's text picks the task: more than 200
   words or at least 3 analysis keywords is complex (REASONING); more than
   50 words or at least 1 keyword is medium (CREATIVE); anything else is
   simple (FAST).

Keywords are counted as case-insensitive substrings, so Korean words with
particles attached (분석해 줘) and English inflections (analyzed) count.
Effective max_tokens: the request's value, else the model's default (1.5x
for user text over 500 words), never above the cap of 16,000.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from server.catalog import Catalog, ModelSpec
from server.domain import (
    Call,
    Completion,
    Complexity,
    Request,
    Role,
    RouteBasis,
    RouteDecision,
    StreamEvent,
    Task,
)
from server.errors import UnknownModelError
from server.pipeline.base import Handler, Stage
from server.settings import RoutingSettings
from server.tokens import conversation_tokens

_TASK_OF = {
    Complexity.COMPLEX: Task.REASONING,
    Complexity.MEDIUM: Task.CREATIVE,
    Complexity.SIMPLE: Task.FAST,
}


class Router:
    """Decides the model, fallback chain, max_tokens and cost range of a request."""

    __slots__ = ("_catalog", "_keywords", "_settings")

    def __init__(self, catalog: Catalog, settings: RoutingSettings) -> None:
        self._catalog = catalog
        self._settings = settings
        alternatives = sorted({k.lower() for k in settings.keywords}, key=len, reverse=True)
        self._keywords = re.compile("|".join(re.escape(k) for k in alternatives))

    @property
    def catalog(self) -> Catalog:
        """The catalog routed over."""
        return self._catalog

    def judge(self, text: str) -> tuple[Complexity, int, int]:
        """The complexity of `text`, with its word count and keyword hits."""
        words = len(text.split())
        hits = len(self._keywords.findall(text.lower()))
        s = self._settings
        if words > s.complex_words or hits >= s.complex_keywords:
            return Complexity.COMPLEX, words, hits
        if words > s.medium_words or hits >= s.medium_keywords:
            return Complexity.MEDIUM, words, hits
        return Complexity.SIMPLE, words, hits

    def decide(self, request: Request) -> RouteDecision:
        """Route `request`; raises UnknownModelError for a model not served."""
        text = "\n".join(m.content for m in request.messages if m.role is Role.USER)
        complexity, words, hits = self.judge(text)
        catalog = self._catalog
        if request.model is not None:
            model = catalog.get(request.model)
            if model is None:
                raise UnknownModelError(request.model, catalog.names)
            task, basis = model.task, RouteBasis.MODEL
            reason = f"{model.name} was requested by name"
        elif request.task is not None:
            task, basis = request.task, RouteBasis.TASK
            model = catalog.task_models[task]
            reason = f"task {task.name} is served by {model.name}"
        else:
            task, basis = _TASK_OF[complexity], RouteBasis.COMPLEXITY
            model = catalog.task_models[task]
            reason = (
                f"{complexity.value} query ({_count(words, 'word')}, "
                f"{_count(hits, 'analysis keyword')}) routed as {task.name} to {model.name}"
            )
        fallbacks = catalog.fallbacks(model) if request.fallback else ()
        long_prompt = words > self._settings.long_prompt_words
        chain_max_tokens = tuple(
            self._max_tokens(request, candidate, long_prompt) for candidate in (model, *fallbacks)
        )
        input_tokens = conversation_tokens(m.content for m in request.messages)
        cost_min = input_tokens * model.price.input_nanos
        return RouteDecision(
            model=model,
            fallbacks=fallbacks,
            task=task,
            complexity=complexity,
            basis=basis,
            reason=reason,
            input_tokens=input_tokens,
            chain_max_tokens=chain_max_tokens,
            cost_min=cost_min,
            cost_max=cost_min + chain_max_tokens[0] * model.price.output_nanos,
        )

    def _max_tokens(self, request: Request, model: ModelSpec, long_prompt: bool) -> int:
        if request.max_tokens is not None:
            wanted = request.max_tokens
        elif long_prompt:
            wanted = model.default_max_tokens * 3 // 2
        else:
            wanted = model.default_max_tokens
        return min(wanted, self._settings.max_tokens_cap)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class RouterStage(Stage[Call]):
    """Decides the route of each call and hands it on."""

    __slots__ = ("_router",)

    def __init__(self, next_handler: Handler[Call], router: Router) -> None:
        super().__init__(next_handler)
        self._router = router

    async def query(self, call: Call, /) -> Completion:
        """Route, then answer."""
        call.route = self._router.decide(call.request)
        return await self.next.query(call)

    def stream(self, call: Call, /) -> AsyncGenerator[StreamEvent, None]:
        """Route (refusing bad requests before the stream starts), then stream."""
        call.route = self._router.decide(call.request)
        return self.next.stream(call)
