"""The simulated models and how long each takes to answer.

Time to first token (TTFT) of a real model is right-skewed: most requests
land near the median, a few take several times longer. A log-normal captures
that with two numbers a dashboard already shows, P50 and P99:

    mu    = ln(P50)
    sigma = (ln(P99) - ln(P50)) / 2.326     (2.326 = z-score of the 99th percentile)

The draw comes from a number in (0, 1) that the caller derives from the
request itself, so the same request always waits the same time and a flaky
timing in a test can be replayed. After the first token, tokens follow at a
steady pace. Every delay is multiplied by ``latency_scale`` (0 turns delays
off) except an explicit ``latency_ms`` directive, which is absolute so a test
can force a slow answer even when everything else is instant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from types import MappingProxyType

Z_P99 = 2.326  # standard normal quantile at 0.99, as fitted by the table's P99
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """One simulated model: its latency distribution, concurrency limit and abilities.

    ``reasoning`` models accept Anthropic ``thinking`` and OpenAI
    ``reasoning_effort`` (others refuse both with a 400, as the providers do);
    a model without ``vision`` refuses image parts, as DeepSeek's API does.
    """

    name: str
    ttft_p50_ms: float
    ttft_p99_ms: float
    max_concurrent: int
    owned_by: str
    reasoning: bool = False
    vision: bool = True

    def first_token_ms(self, draw: float) -> float:
        """The TTFT quantile at ``draw`` (0 < draw < 1) of this model's log-normal."""
        mu = math.log(self.ttft_p50_ms)
        sigma = (math.log(self.ttft_p99_ms) - mu) / Z_P99
        return math.exp(mu + sigma * _STANDARD_NORMAL.inv_cdf(draw))


CATALOG: Mapping[str, ModelProfile] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            # Claude Sonnet 4 thinks when asked (extended thinking); GPT-4.1 is no
            # reasoning model; Gemini 2.5 Flash takes reasoning_effort on its
            # OpenAI-compatible API; DeepSeek's chat API reads no images.
            ModelProfile("claude-sonnet-4-20250514", 850, 2100, 10, "anthropic", reasoning=True),
            ModelProfile("gpt-4.1", 620, 1800, 20, "openai"),
            ModelProfile("gemini-2.5-flash", 180, 450, 30, "google", reasoning=True),
            ModelProfile("deepseek-v3.2", 320, 900, 5, "deepseek", vision=False),
        )
    }
)


@dataclass(frozen=True, slots=True)
class Timing:
    """The delays of one response, in seconds, already scaled."""

    first_token_s: float  # before the first answer token (or before a unary body)
    token_interval_s: float  # between two consecutive tokens

    def unary_s(self, tokens: int) -> float:
        """How long a unary answer of ``tokens`` tokens takes: TTFT plus the rest."""
        return self.first_token_s + max(tokens - 1, 0) * self.token_interval_s


def plan_timing(
    profile: ModelProfile,
    draw: float,
    *,
    latency_scale: float,
    tokens_per_second: float,
    latency_ms: int | None = None,
) -> Timing:
    """Delays for one request: drawn (or forced) TTFT and the token pace."""
    if latency_ms is not None:
        first = latency_ms / 1000  # absolute on purpose: tests force slowness with it
    else:
        first = profile.first_token_ms(draw) / 1000 * latency_scale
    return Timing(first_token_s=first, token_interval_s=latency_scale / tokens_per_second)
