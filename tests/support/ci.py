"""What CI allows: the only tests that may skip (a GPU test on a machine without a GPU, and its twin)."""

from __future__ import annotations

# In CI (SQUALL_CI=1) a skipped test fails: a test that needs something missing must not pass silently. Only the
# GPU pair may skip, each on the machines it is not for (no CUDA device / a CUDA device).
CI_ALLOWED_SKIPS = frozenset({
    "tests/test_model_loading.py::test_a_torch_model_on_the_gpu_predicts_like_the_cpu",
    "tests/test_model_loading.py::test_asking_for_a_gpu_without_one_fails_at_start_up_and_says_so",
})
