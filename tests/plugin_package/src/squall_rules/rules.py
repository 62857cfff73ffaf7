"""A rule model: a linear score written as text, one term a line.

    # churn score
    bias 0.5
    f0 2.0
    f3 -1.25

predicts ``bias + sum(weight * column)`` for every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Rule:
    """A bias and a weight per column."""

    bias: float
    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> Rule:
        """The rule ``text`` writes; raises ``ValueError`` naming the line that is not ``NAME NUMBER``."""
        bias, weights = 0.0, []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                name, value = line.split()
                weight = float(value)
            except ValueError:
                raise ValueError(f"line {number}: expected `NAME NUMBER`, found {line!r}") from None
            if name == "bias":
                bias = weight
            else:
                weights.append((name, weight))
        return cls(bias, tuple(weights))

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        """The score of every row of ``frame``."""
        score = pd.Series(self.bias, index=frame.index, dtype="float64")
        for name, weight in self.weights:
            score = score + weight * frame[name].astype("float64")
        return score
