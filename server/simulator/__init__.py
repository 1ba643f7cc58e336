"""The relay simulator: the one HTTP relay Switchyard talks to, imitated, faults on demand.

``make run`` serves the gateway against it (no key, no network) and every
test uses it to inject failures. See :mod:`server.simulator.app` for the
server, :mod:`server.simulator.faults` for the fault directives,
:mod:`server.simulator.features` for the answer directives (tool calls, JSON,
thinking, cache) and :mod:`server.simulator.content` for the answer and usage
rules.
"""

from server.simulator.app import RelaySimulator, SimulatorSettings
from server.simulator.stats import ModelStats, SimulatorStats

__all__ = ["ModelStats", "RelaySimulator", "SimulatorSettings", "SimulatorStats"]
