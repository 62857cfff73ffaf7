"""The ``rule`` flavor: squall's :class:`~squall.models.base.Flavor` for ``.rule`` files."""

from __future__ import annotations

from typing import Any

from squall.errors import ModelLoadError
from squall.models.base import ModelArtifact, ModelRef

from squall_rules.rules import Rule


class RuleModel:
    """A loaded rule: it takes pandas batches and returns one score per row."""

    labels = None
    batch_format = "pandas"
    vector_output = False

    def __init__(self, rule: Rule) -> None:
        self._rule = rule

    def call(self, batch: Any) -> Any:
        return self._rule.predict(batch).to_numpy()


class RuleFlavor:
    """A ``.rule`` text file; reading it runs nothing."""

    name = "rule"
    runs_code_on_load = False

    def load(self, ref: ModelRef, artifact: ModelArtifact) -> RuleModel:
        try:
            return RuleModel(Rule.parse(artifact.content().decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(f"{ref.uri}: not a rule file ({exc}); write one `NAME NUMBER` term per line") from None
