"""The package and its tests type-check clean under the mypy settings in pyproject.toml (which name both, and check
the bodies of test functions left unannotated)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_and_its_tests_type_check_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
