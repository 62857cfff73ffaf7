"""Helpers shared by the test modules: no test module imports another."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
"""The tests folder: on the workers' PYTHONPATH, so they import the test models (faultmodels, ...)."""
