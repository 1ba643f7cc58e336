"""A faster `__init__` for frozen slotted dataclasses, the values of the call path.

`@dataclass(frozen=True)` sets each field in `__init__` with
`object.__setattr__(self, "name", value)`: a generic attribute lookup by name per
field, about 0.2 us each (a 15-field record took 3.3 us to build, against 0.3 us for
the same class unfrozen), and a call builds a dozen such values (its request, route,
usage, attempts, completion, ledger record...). `fast_init` replaces that `__init__`
with one of the same signature and behaviour that sets each field through its slot's
descriptor instead: the class stays frozen (assignment still raises), equal, hashable
and `dataclasses.replace`-able as before::

    @fast_init
    @dataclass(frozen=True, slots=True)
    class Usage:
        input_tokens: int = 0
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass `cls` an `__init__` that sets its fields through
    their slot descriptors (same parameters, defaults, factories and `__post_init__`)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init is for @dataclass(frozen=True, slots=True)")
    scope: dict[str, Any] = {"_FACTORY": _Factory}
    arguments: list[str] = []
    body: list[str] = []
    for index, field in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: keyword-only fields are not handled")
        setter = f"_set{index}"
        scope[setter] = cls.__dict__[field.name].__set__  # the slot's member descriptor
        name = field.name
        if field.default_factory is not _MISSING:
            factory = f"_factory{index}"
            scope[factory] = field.default_factory
            if field.init:
                arguments.append(f"{name}=_FACTORY")
                body.append(f"{setter}(self, {factory}() if {name} is _FACTORY else {name})")
            else:
                body.append(f"{setter}(self, {factory}())")
        elif field.init:
            if field.default is _MISSING:
                arguments.append(name)
            else:
                default = f"_default{index}"
                scope[default] = field.default
                arguments.append(f"{name}={default}")
            body.append(f"{setter}(self, {name})")
        elif field.default is not _MISSING:
            default = f"_default{index}"
            scope[default] = field.default
            body.append(f"{setter}(self, {default})")
        # (init=False without a default: left to __post_init__, as dataclass does)
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(arguments)}):\n"
    source += "".join(f"    {line}\n" for line in body or ["pass"])
    exec(source, scope)  # noqa: S102 - generated from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - replacing the method on purpose
    return cls


class _Factory:
    """The default of a parameter whose field has a default factory (never a value)."""
