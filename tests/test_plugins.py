"""Third-party plugins through entry points, and names nothing registered.

``tests/plugin_package`` is a package as a third party would write it: it
declares a model flavor (``rule``: a linear score in a ``.rule`` text file)
and an input format (``fwf``: fixed-width text) in the entry-point groups
``squall.flavors`` and ``squall.formats``. The test installs it with pip into
a temporary directory, puts that on ``PYTHONPATH`` and runs a real job from the
command line with both; the rest of this process never sees the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from support import TESTS_DIR
from support.cli import run_cli
from support.data import make_frame, read_output

import squall
from squall.backends.registry import BACKENDS
from squall.formats.registry import FORMATS
from squall.io.part_formats import OUTPUT_FORMATS
from squall.models.registry import FLAVORS
from squall.registry import Registry

RULE = """\
# a churn score
bias 0.5
f0 2.0
f3 -1.25
id 0.001
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The plugin package, installed by pip (from a copy: building writes into the source tree) into a directory
    of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(TESTS_DIR / "plugin_package", work / "source")
    target = work / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    assert (target / "squall_rules" / "flavor.py").exists()
    return str(target)


def with_plugin(plugin_path: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([plugin_path, os.environ.get("PYTHONPATH", "")])}


def write_fixed_width(frame: pd.DataFrame, path: Path, width: int = 14) -> None:
    """Each column in a field of ``width`` characters, its name first; every line the same length."""
    lines = ["".join(str(name).ljust(width) for name in frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("".join((str(v) if isinstance(v, (int, np.integer)) else f"{v:.6f}").ljust(width) for v in row))
    path.write_text("\n".join(lines) + "\n")


def rule_predictions(plugin_path: str, rule: Path, rows: Path, out: Path) -> pd.Series:
    """The plugin model's own call on ``rows`` (a Parquet file), made where the plugin is installed."""
    script = (
        "import sys, pandas as pd; from squall_rules.rules import Rule; "
        "frame = pd.read_parquet(sys.argv[2]); "
        "pd.DataFrame({'id': frame['id'], 'score': Rule.parse(open(sys.argv[1]).read()).predict(frame)}).to_parquet(sys.argv[3])"
    )
    done = subprocess.run([sys.executable, "-c", script, str(rule), str(rows), str(out)], capture_output=True, text=True,
                          env={**os.environ, **with_plugin(plugin_path)}, timeout=120)
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(out).set_index("id")["score"]


def test_a_job_runs_with_a_plugins_flavor_and_format_from_the_command_line(plugin_path, tmp_path):
    frame = make_frame(3_000, seed=4)[["id", "f0", "f3"]]
    write_fixed_width(frame, tmp_path / "rows.fwf")
    (tmp_path / "model.rule").write_text(RULE)
    done = run_cli(
        "run", "--model", str(tmp_path / "model.rule"), "--flavor", "rule", "--input", str(tmp_path / "rows.fwf"),
        "--format", "fwf", "--output", str(tmp_path / "out"), "--key", "id", "--features", "id,f0,f3",
        "--chunk-rows", "700", "--workers", "2", "-q", env=with_plugin(plugin_path),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert (tmp_path / "out" / "_SUCCESS").exists()
    got = read_output(tmp_path / "out").set_index("id").sort_index()
    assert len(list((tmp_path / "out").glob("part-*"))) == 5  # 3,000 rows in chunks of 700
    # What the job read is the file's text: its values as written, six decimals.
    as_written = pd.read_fwf(tmp_path / "rows.fwf", widths=[14, 14, 14])
    as_written.to_parquet(tmp_path / "as_written.parquet")
    want = rule_predictions(plugin_path, tmp_path / "model.rule", tmp_path / "as_written.parquet", tmp_path / "want.parquet")
    assert got.index.equals(want.sort_index().index)
    np.testing.assert_allclose(got["prediction"].to_numpy(), want.sort_index().to_numpy(), rtol=1e-12)


def test_an_unknown_flavor_on_the_command_line_lists_the_registered_ones_with_the_plugins(plugin_path, tmp_path):
    (tmp_path / "model.rule").write_text(RULE)
    write_fixed_width(make_frame(10)[["id", "f0"]], tmp_path / "rows.fwf")
    for option, kind in (("--flavor", "model flavor"), ("--format", "input format")):
        done = run_cli(
            "run", "--model", str(tmp_path / "model.rule"), "--input", str(tmp_path / "rows.fwf"),
            "--output", str(tmp_path / "out"), option, "nope", env=with_plugin(plugin_path),
        )
        assert done.returncode == 2, done.stdout + done.stderr
        builtins = FLAVORS.names() if option == "--flavor" else FORMATS.names()
        plugin = "rule" if option == "--flavor" else "fwf"
        listed = f"unknown {kind} 'nope'; use one of {', '.join([*builtins, plugin])}"
        assert listed in " ".join(done.stderr.split()), done.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("field", "registry"), [
    ("backend", BACKENDS), ("format", FORMATS), ("flavor", FLAVORS), ("output_format", OUTPUT_FORMATS),
])
def test_an_unknown_name_in_a_spec_is_refused_naming_every_registered_name(field, registry: Registry, tmp_path):
    with pytest.raises(pydantic.ValidationError) as refused:
        squall.JobSpec(model="m.joblib", input=[str(tmp_path)], output=str(tmp_path / "out"), **{field: "nope"})
    message = str(refused.value)
    assert f"unknown {registry.kind} 'nope'; use one of {', '.join(registry.names())}" in message
    assert registry.group in message  # where a package registers another
