"""Running ``squall`` as a user would: a fresh process of the installed command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).parent / "squall"


SQUALL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "squall.cli"]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``squall ARGS`` as a user would, in a fresh process."""
    return subprocess.run(
        [*SQUALL, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=240
    )
