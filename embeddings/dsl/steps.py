"""The step bookkeeping every DSL mode shares: counting steps, deciding the update steps, and the
sampled steps that accumulate gradient evidence.

Example:
    >>> from embeddings.config import DSLConfig
    >>> s = StepClock(DSLConfig(update_every=2), total_steps=4)
    >>> [s.tick(t, budget=8)[1] is not None for t in range(4)]
    [False, True, False, True]
"""

from __future__ import annotations

from embeddings.config import DSLConfig
from embeddings.dsl.hooks import sampled_steps
from embeddings.dsl.schedule import exchange_fraction

__all__ = ["StepClock"]


class StepClock:
    """Step counters of a DSL controller. Subclasses set `default_grad_steps` (the sampled evidence
    steps per interval when `cfg.grad_steps` is None; None there: every step of the window)."""

    default_grad_steps: int | None = None

    def __init__(self, cfg: DSLConfig, total_steps: int, seed: int = 0) -> None:
        self.cfg, self.total_steps, self._seed = cfg, total_steps, seed
        self._since_update = 0
        self._steps_done = 0
        # (interval, whether its update exchanges anything, its sampled step positions or None: every step)
        self._sampled: tuple[int, bool, frozenset[int] | None] = (-1, False, None)

    def tick(self, step: int, budget: int) -> tuple[dict, float | None]:
        """Count step `step` (0-based) as done. Returns the step's stats and, on an update step (when
        `(step + 1) % update_every == 0`), the share of the budget to exchange (else None)."""
        self._since_update += 1
        self._steps_done = step + 1
        stats: dict = {"step": step, "updated": False, "fraction": 0.0, "exchanged": 0, "budget": budget}
        if (step + 1) % self.cfg.update_every != 0:
            return stats, None
        self._since_update = 0
        return stats, exchange_fraction(step + 1, self.total_steps, self.cfg)

    def _accumulates(self) -> bool:
        """Whether this step's gradient evidence is accumulated: inside the window (`cfg.grad_window`
        steps before each update, or the whole interval), while the schedule still exchanges weights,
        and, with k = `cfg.grad_steps` (or `default_grad_steps`), on one seeded random step in each of
        k equal parts of the window. Decided once per interval (a set lookup per step)."""
        every, pos = self.cfg.update_every, self._since_update
        span = every if self.cfg.grad_window is None else min(self.cfg.grad_window, every)
        if pos < every - span:
            return False
        interval = self._steps_done // every
        if self._sampled[0] != interval:
            # once the schedule has ended no update exchanges anything: stop accumulating
            live = exchange_fraction((interval + 1) * every, self.total_steps, self.cfg) > 0
            k = self.cfg.grad_steps or self.default_grad_steps
            steps = None if k is None or k >= span else sampled_steps(every - span, span, k, self._seed, interval)
            self._sampled = (interval, live, steps)
        _, live, steps = self._sampled
        return live and (steps is None or pos in steps)
