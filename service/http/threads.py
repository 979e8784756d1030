"""How many torch threads each encoder call of the service gets, chosen by measurement.

Why: on a small CPU the service's own HTTP work (and anything else on the machine) takes
cores from the encoder, and torch's intra-op threads then wait for each other at every
layer: measured here with one core busy elsewhere, 2 threads gave 7-13 passages/s where 1
thread gave 21-24; on an idle machine 2 threads gave 29-38 against 22-24. No fixed choice
is right for both, so the tuner keeps a smoothed cost per passage for each choice, uses the
cheaper one, and tries the other every few calls so it notices when the load changes."""

from __future__ import annotations

from collections.abc import Callable


class ThreadTuner:
    explore_every = 12  # calls between two tries of the choice not in use
    smoothing = 0.5  # weight of the newest measurement: a change of load shows in 2-3 tries

    def __init__(self, most: int, set_threads: Callable[[int], None]):
        self.options = sorted({1, max(1, most)}, reverse=True)
        self.set_threads = set_threads
        self.cost: dict[int, float] = {}  # threads -> smoothed seconds per passage
        self.calls = 0
        self.current: int | None = None

    @classmethod
    def for_torch(cls) -> ThreadTuner:
        import torch

        return cls(torch.get_num_threads(), torch.set_num_threads)

    def choose(self) -> int:
        """The thread count for the next call (and sets it)."""
        self.calls += 1
        untried = [n for n in self.options if n not in self.cost]
        best = min(self.cost, key=self.cost.get) if self.cost else self.options[0]
        if untried:
            pick = untried[0]
        elif len(self.options) > 1 and self.calls % self.explore_every == 0:
            pick = next(n for n in self.options if n != best)
        else:
            pick = best
        if pick != self.current:
            self.set_threads(pick)
            self.current = pick
        return pick

    def record(self, threads: int, seconds: float, passages: int) -> None:
        per = seconds / max(passages, 1)
        old = self.cost.get(threads)
        self.cost[threads] = per if old is None else (1 - self.smoothing) * old + \
            self.smoothing * per
