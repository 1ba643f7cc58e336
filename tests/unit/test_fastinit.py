"""fast_init: the same construction as a frozen dataclass's own __init__, and still frozen."""

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from server import domain
from server.fastinit import fast_init
from server.state.ledger import CallRecord
from server.state.responses import CachedAnswer


def _declare() -> type:
    @dataclass(frozen=True, slots=True)
    class Value:
        name: str
        count: int = 3
        tags: list[str] = field(default_factory=list)
        seen: bool = field(default=False, init=False)
        log: list[str] = field(default_factory=list, init=False, compare=False)
        doubled: int = field(init=False, repr=False, compare=False)

        def __post_init__(self) -> None:
            object.__setattr__(self, "doubled", self.count * 2)

    return Value


PlainValue = _declare()
FastValue: type = fast_init(_declare())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 5), {}), (("a",), {"tags": ["x"]}), ((), {"name": "b", "count": 0})],
)
def test_builds_what_the_dataclass_init_builds(args, kwargs):
    plain, fast = PlainValue(*args, **kwargs), FastValue(*args, **kwargs)
    assert dataclasses.asdict(fast) == dataclasses.asdict(plain)
    assert (fast.doubled, fast.seen, fast.log) == (plain.doubled, False, [])
    assert repr(fast).replace("FastValue", "") == repr(plain).replace("PlainValue", "")


def test_each_instance_gets_a_fresh_default_from_its_factory():
    first, second = FastValue("a"), FastValue("b")
    assert first.tags == [] and first.tags is not second.tags
    assert first.log is not second.log


def test_stays_frozen_equal_hashable_and_replaceable():
    value = FastValue("a", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.count = 4
    assert value == FastValue("a", 2) and value != FastValue("a", 3)
    assert hash(FastValue("a", 2, ("t",))) == hash(FastValue("a", 2, ("t",)))
    changed = dataclasses.replace(value, count=7)
    assert (changed.name, changed.count, changed.doubled) == ("a", 7, 14)


def test_refuses_the_arguments_the_dataclass_refuses():
    with pytest.raises(TypeError):
        FastValue()
    with pytest.raises(TypeError):
        FastValue("a", 1, [], True)
    with pytest.raises(TypeError):
        FastValue("a", seen=True)


def test_refuses_classes_it_is_not_for():
    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True)
    class Unslotted:
        x: int

    for cls in (Mutable, Unslotted):
        with pytest.raises(TypeError, match="frozen=True, slots=True"):
            fast_init(cls)


@pytest.mark.parametrize(
    "cls",
    [
        domain.TextPart,
        domain.Message,
        domain.Request,
        domain.Usage,
        domain.RouteDecision,
        domain.Attempt,
        domain.Completion,
        domain.ModelCall,
        CachedAnswer,
        CallRecord,
    ],
)
def test_the_call_path_values_keep_their_signature(cls):
    """Every init field is a parameter, in order, with its default (or its factory's)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = [f for f in dataclasses.fields(cls) if f.init]
    assert [p.name for p in parameters] == [f.name for f in fields]
    for parameter, declared in zip(parameters, fields, strict=True):
        if declared.default is not dataclasses.MISSING:
            assert parameter.default is declared.default
        elif declared.default_factory is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
