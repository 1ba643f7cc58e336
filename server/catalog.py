"""The model catalog: which models are served, by whom, at what price.

The defaults below are the catalog of the issue that founded Switchyard; a
TOML file can change or extend them (see ``settings/catalog.py``). Cached-input
prices follow each provider's published discount for prompt-cache reads
(Anthropic and DeepSeek 10% of the input price, OpenAI and Google 25%); only
Anthropic charges for prompt-cache writes, at 1.25 times the input price (its
5-minute cache), so the others leave `cache_write_price` at the input price.
Features follow each provider's documentation: every model takes tools; all
but DeepSeek take images and JSON Schema answers (DeepSeek's API has neither:
only JSON-object mode); Claude (extended thinking) and Gemini 2.5 (thinking
budgets) reason, GPT-4.1 does not (it refuses `reasoning_effort`). The catalog is
validated once at start-up and then only read. `ModelSpec`, one model of
it, is part of the domain vocabulary (``domain.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from server.domain import ModelSpec, Task


@dataclass(frozen=True, slots=True)
class Catalog:
    """The served models, by name, and the default model of each task."""

    models: Mapping[str, ModelSpec]
    task_models: Mapping[Task, ModelSpec]

    @classmethod
    def build(cls, models: Iterable[ModelSpec], task_models: Mapping[Task, str]) -> Catalog:
        """Index `models`; `task_models` names each task's default model."""
        by_name = {model.name: model for model in models}
        return cls(
            MappingProxyType(by_name),
            MappingProxyType({task: by_name[name] for task, name in task_models.items()}),
        )

    def get(self, name: str) -> ModelSpec | None:
        """The model called `name`, or None when it is not served."""
        return self.models.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the served models, sorted, for messages to callers."""
        return tuple(sorted(self.models))

    def fallbacks(self, model: ModelSpec) -> tuple[ModelSpec, ...]:
        """The models tried after `model`, in order."""
        models = self.models
        return tuple([models[name] for name in model.fallbacks])

    def servers(self, task: Task) -> tuple[ModelSpec, ...]:
        """Every model that can serve `task`, in catalog order."""
        return tuple(model for model in self.models.values() if model.serves(task))


DEFAULT_MODELS = (
    ModelSpec(
        name="claude-sonnet-4-20250514",
        task=Task.REASONING,
        provider="anthropic",
        wire="anthropic",
        input_price=Decimal(15),
        output_price=Decimal(75),
        max_concurrent=10,
        fallbacks=("gpt-4.1", "gemini-2.5-flash"),
        default_max_tokens=8192,
        context_window=200_000,
        cached_input_price=Decimal("1.50"),  # cache reads: 10% of input
        cache_write_price=Decimal("18.75"),  # cache writes: 125% of input
        tasks=(Task.CREATIVE, Task.FAST, Task.BATCH),
        reasoning=True,
    ),
    ModelSpec(
        name="gpt-4.1",
        task=Task.CREATIVE,
        provider="openai",
        wire="openai",
        input_price=Decimal(8),
        output_price=Decimal(32),
        max_concurrent=20,
        fallbacks=("claude-sonnet-4-20250514",),
        default_max_tokens=4096,
        context_window=1_047_576,
        cached_input_price=Decimal(2),  # cached input: 25% of input
        tasks=(Task.REASONING, Task.FAST, Task.BATCH),
    ),
    ModelSpec(
        name="gemini-2.5-flash",
        task=Task.FAST,
        provider="google",
        wire="openai",
        input_price=Decimal("2.50"),
        output_price=Decimal(10),
        max_concurrent=30,
        fallbacks=("gpt-4.1",),
        default_max_tokens=1024,
        context_window=1_048_576,
        cached_input_price=Decimal("0.625"),  # cached input: 25% of input
        tasks=(Task.CREATIVE, Task.BATCH),
        reasoning=True,
    ),
    ModelSpec(
        name="deepseek-v3.2",
        task=Task.BATCH,
        provider="deepseek",
        wire="openai",
        input_price=Decimal("0.42"),
        output_price=Decimal("0.42"),
        max_concurrent=5,
        fallbacks=("gpt-4.1",),
        default_max_tokens=4096,
        context_window=128_000,
        cached_input_price=Decimal("0.042"),  # cache hits: 10% of input
        tasks=(Task.CREATIVE,),
        images=False,
        json_schema=False,
    ),
)


def default_catalog() -> Catalog:
    """The built-in catalog: each model is its own task's default."""
    return Catalog.build(DEFAULT_MODELS, {model.task: model.name for model in DEFAULT_MODELS})
