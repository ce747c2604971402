"""A deterministic, resumable mixture of task-family streams.

Given each family's sample keys and its weight, `MixtureSampler` yields (family, key) pairs so that the
running share of each family tracks its weight (smooth weighted round-robin: no randomness needed for
the proportions), and within a family walks a seeded permutation, reshuffled each epoch. Its whole
state is a few integers (`state_dict`), which is what a resumed run restores to see the same data order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class MixtureSampler:
    def __init__(self, keys_by_family: dict[str, list[str]], weights: dict[str, float], seed: int):
        missing = sorted(f for f, w in weights.items() if w > 0 and not keys_by_family.get(f))
        if missing:
            raise ValueError(f"mixture names task families with no samples: {missing}; "
                             f"available: {sorted(k for k, v in keys_by_family.items() if v)}")  # fmt: skip
        self.families = sorted(f for f, w in weights.items() if w > 0)
        self.weights = {f: weights[f] for f in self.families}
        self.keys = {f: sorted(keys_by_family[f]) for f in self.families}
        self.seed = seed
        self.credit = {f: 0.0 for f in self.families}
        self.position = {f: 0 for f in self.families}
        self.drawn = 0
        self._orders: dict[str, tuple[int, list[str]]] = {}  # family -> (epoch, its permutation), derived state

    def _order(self, family: str, epoch: int) -> list[str]:
        """The family's permutation for `epoch`, shuffled once per epoch: reshuffling on every draw cost ~5 ms
        a draw for stage 5's 20,000-sample pseudo_asr family, ~80 s of its 371 s (benchmarks/README.md)."""
        cached = self._orders.get(family)
        if cached is None or cached[0] != epoch:
            order = list(self.keys[family])
            random.Random(f"{self.seed}:{family}:{epoch}").shuffle(order)
            cached = self._orders[family] = (epoch, order)
        return cached[1]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        while True:
            yield self.next()

    def next(self) -> tuple[str, str]:
        total = sum(self.weights.values())
        for family in self.families:
            self.credit[family] += self.weights[family]
        family = max(self.families, key=lambda f: (self.credit[f], -self.families.index(f)))
        self.credit[family] -= total
        position = self.position[family]
        epoch, index = divmod(position, len(self.keys[family]))
        self.position[family] = position + 1
        self.drawn += 1
        return family, self._order(family, epoch)[index]

    def state_dict(self) -> dict:
        return {"credit": dict(self.credit), "position": dict(self.position), "drawn": self.drawn, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or set(state["position"]) != set(self.families):
            raise ValueError("data-loader state belongs to another seed or mixture: cannot resume this run from it")
        self.credit, self.position, self.drawn = dict(state["credit"]), dict(state["position"]), state["drawn"]
