"""The in-memory backend of every store: one process, nothing kept across a restart."""

from server.state.memory.breakers import MemoryBreakers
from server.state.memory.budgets import MemoryBudgetStore
from server.state.memory.directory import MemoryDirectory
from server.state.memory.gates import MemoryConcurrencyGate, MemoryGates, MemoryRateGate
from server.state.memory.ledger import MemoryLedger
from server.state.memory.responses import MemoryResponseStore

__all__ = [
    "MemoryBreakers",
    "MemoryBudgetStore",
    "MemoryConcurrencyGate",
    "MemoryDirectory",
    "MemoryGates",
    "MemoryLedger",
    "MemoryRateGate",
    "MemoryResponseStore",
]
