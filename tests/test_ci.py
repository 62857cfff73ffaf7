"""CI runs every test: under `SQUALL_CI=1` (what `.ci/run` sets) a skipped test fails, but for the GPU pair."""

from __future__ import annotations

from support import TESTS_DIR
from support.ci import CI_ALLOWED_SKIPS

pytest_plugins = ["pytester"]


def test_in_ci_a_skipped_test_fails_with_its_reason_and_outside_ci_it_only_skips(pytester, monkeypatch):
    pytester.makeconftest((TESTS_DIR / "conftest.py").read_text())
    pytester.makepyfile(test_needs="import pytest\n\ndef test_needs_chromium():\n    pytest.skip('chromium is not installed')\n")
    monkeypatch.delenv("SQUALL_CI", raising=False)
    pytester.runpytest().assert_outcomes(skipped=1)
    monkeypatch.setenv("SQUALL_CI", "1")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*skipped in CI, where every test must run: Skipped: chromium is not installed*"])


def test_the_skips_ci_allows_are_the_gpu_pair_and_exist():
    for node in CI_ALLOWED_SKIPS:
        path, name = node.split("::")
        assert f"def {name}(" in (TESTS_DIR.parent / path).read_text(), node
    assert all("gpu" in node for node in CI_ALLOWED_SKIPS)
