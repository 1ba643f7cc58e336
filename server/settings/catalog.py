"""The catalog merge: [models.*] and [routing.tasks] tables onto the built-in catalog.

A table for a built-in model changes only the fields it names; a table for
a new model must name every required field; `enabled = false` removes a
model. Each task must end up with a served default model, each model's
`wire` must be one the relay speaks (``server/relay/wires.py`` is the only
list of them) and its fallbacks other served models.

Feature flags (`tools`, `images`, `json_schema`, `reasoning`) are booleans. An
Anthropic model whose table sets `input_price` but not `cache_write_price`
gets Anthropic's published cache-write rate, 1.25 times the input price;
every other model's cache writes cost the input price unless it says.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.catalog import DEFAULT_MODELS, Catalog
from server.domain import PRICE_QUANTUM, ModelSpec, Task, nanos_per_token
from server.relay.wires import WIRES
from server.settings.schema import ConfigError
from server.settings.sources import coerce

_MODEL_KEYS = frozenset(
    f.name for f in dataclasses.fields(ModelSpec) if f.init and f.name != "name"
) | {"enabled"}
ANTHROPIC_CACHE_WRITE_RATE = Decimal("1.25")  # of the input price (its 5-minute cache)
_MODEL_REQUIRED = frozenset(
    f.name
    for f in dataclasses.fields(ModelSpec)
    if f.init and f.name != "name" and f.default is dataclasses.MISSING
)


def build_catalog(models_table: Mapping[str, Any], task_table: Mapping[str, Any]) -> Catalog:
    """Merge [models.*] onto the defaults: per field for known models, whole for new ones."""
    defaults = {model.name: model for model in DEFAULT_MODELS}
    hints = typing.get_type_hints(ModelSpec)
    merged: dict[str, ModelSpec] = dict(defaults)
    for name, table in models_table.items():
        where = f"SWITCHYARD_CONFIG models.{name}"
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table")
        unknown = set(table) - _MODEL_KEYS
        if unknown:
            raise ConfigError(
                f"{where}.{sorted(unknown)[0]}",
                f"unknown key; expected one of {', '.join(sorted(_MODEL_KEYS))}",
            )
        if table.get("enabled", True) is False:
            merged.pop(name, None)
            continue
        values: dict[str, object] = {}
        base = defaults.get(name)
        if base is not None:
            values = {
                f.name: getattr(base, f.name)
                for f in dataclasses.fields(ModelSpec)
                if f.init and f.name != "name"
            }
        for key, raw in table.items():
            if key == "enabled":
                continue
            if key == "task":
                values[key] = _task(raw, f"{where}.task")
            elif key == "tasks":
                if not isinstance(raw, list):
                    raise ConfigError(f"{where}.tasks", "expected a list of task names")
                values[key] = tuple(_task(item, f"{where}.tasks") for item in raw)
            else:
                values[key] = coerce(raw, hints[key], f"{where}.{key}")
        missing = _MODEL_REQUIRED - set(values)
        if missing:
            raise ConfigError(f"{where}.{sorted(missing)[0]}", "required for a new model")
        if (
            values.get("provider") == "anthropic"
            and "input_price" in table
            and "cache_write_price" not in table
            and isinstance(values["input_price"], Decimal)
        ):
            rate = values["input_price"] * ANTHROPIC_CACHE_WRITE_RATE
            values["cache_write_price"] = rate.quantize(PRICE_QUANTUM, ROUND_HALF_UP)
        try:
            merged[name] = ModelSpec(name=name, **values)  # type: ignore[arg-type]
        except ValueError as exc:
            prices = "input_price/output_price/cached_input_price"
            if _fine(values, ("input_price", "output_price", "cached_input_price")):
                prices = "cache_write_price"  # the one left
            raise ConfigError(f"{where}.{prices}", str(exc)) from None
    tasks = {model.task: model.name for model in reversed(merged.values())}
    for key, raw in task_table.items():
        task = _task(key, f"SWITCHYARD_CONFIG routing.tasks.{key}")
        if not isinstance(raw, str) or raw not in merged:
            raise ConfigError(
                f"SWITCHYARD_CONFIG routing.tasks.{key}",
                f"{raw!r} is not a served model; served: {', '.join(sorted(merged))}",
            )
        tasks[task] = raw
    for task in Task:
        if task not in tasks:
            raise ConfigError(
                f"SWITCHYARD_CONFIG routing.tasks.{task.value}",
                "no served model has this task; name one",
            )
    for model in merged.values():
        _validate_model(model, merged)
    return Catalog.build(merged.values(), tasks)


def _fine(values: Mapping[str, object], keys: tuple[str, ...]) -> bool:
    """Are these prices all exact in nano-dollars per token (or unset)?"""
    for key in keys:
        price = values.get(key)
        if isinstance(price, Decimal):
            try:
                nanos_per_token(price)
            except ValueError:
                return False
    return True


def _task(raw: object, where: str) -> Task:
    try:
        return Task(str(raw).lower())
    except ValueError:
        raise ConfigError(where, f"expected one of {', '.join(t.value for t in Task)}") from None


def _validate_model(model: ModelSpec, models: Mapping[str, ModelSpec]) -> None:
    where = f"SWITCHYARD_CONFIG models.{model.name}"
    if model.wire not in WIRES:
        raise ConfigError(f"{where}.wire", f"expected one of {', '.join(sorted(WIRES))}")
    for name in model.fallbacks:
        if name not in models or name == model.name:
            raise ConfigError(f"{where}.fallbacks", f"{name!r} is not another served model")
    for key in ("max_concurrent", "default_max_tokens", "context_window"):
        if getattr(model, key) < 1:
            raise ConfigError(f"{where}.{key}", "must be at least 1")
