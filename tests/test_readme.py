"""README.md documents what the code does: every spec field, command and option, and a tour that runs as written."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_frame, run_cli, write_frame
from squall.cli import main
from squall.coordinator import JobCancelled, JobResult
from squall.errors import SquallError, UsageError
from squall.formats.registry import _EXTENSIONS, format_names
from squall.io import layout
from squall.models.registry import _EXTENSIONS as MODEL_EXTENSIONS
from squall.models.registry import flavor_names
from squall.spec import JobSpec

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme() -> str:
    return README.read_text()


def section(heading: str) -> str:
    """The text under the Markdown heading ``heading`` up to the next heading of the same or a higher level."""
    lines, level, inside, fenced = [], None, False, False
    for line in readme().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"(#+) (.*?)\s*$", line)
        if match and inside and len(match.group(1)) <= level:
            break
        if inside:
            lines.append(line)
        elif match and match.group(2) == heading:
            inside, level = True, len(match.group(1))
    assert inside, f"README.md has no heading {heading!r}"
    return "\n".join(lines) + "\n"


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table body row in ``text`` (header and separator rows excluded)."""
    rows, previous = [], ""
    for line in text.splitlines():
        is_row = line.startswith("|") and not set(line) <= set("|-: ")
        if is_row and previous.startswith("|"):  # a row after the header (or after another row)
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        previous = line if line.startswith("|") else ""
    return rows


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def spec_table() -> dict[str, list[str]]:
    rows = table_rows(section("Reference: spec fields"))
    return {row[0].strip("`"): row for row in rows if row[0].startswith("`")}


def test_every_spec_field_is_documented_in_the_readme():
    table = spec_table()
    for name, field in JobSpec.model_fields.items():
        assert name in table, f"spec field `{name}` has no row in the README's reference table"
        row = table[name]
        assert row[0] == f"`{name}`"
        assert f"`{option(name)}`" in row[1], f"the row of `{name}` does not name its option {option(name)}"
        assert row[3], f"the row of `{name}` does not say what it means"
    assert len(table) == len(JobSpec.model_fields)


def test_the_reference_table_documents_no_field_the_spec_lacks():
    stale = sorted(set(spec_table()) - set(JobSpec.model_fields))
    assert not stale, f"README.md documents spec fields that do not exist: {stale}"


def _documented_default(name: str) -> str:
    field = JobSpec.model_fields[name]
    if field.is_required():
        return "required"
    if name == "workers":
        return "one per CPU core"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value!r}`" if '"' in value else f'`"{value}"`'
    return f"`{value!r}`"


def test_the_reference_table_states_each_field_s_real_default():
    table = spec_table()
    for name in JobSpec.model_fields:
        assert table[name][2] == _documented_default(name), f"README.md states the wrong default for `{name}`"


def test_every_cli_command_is_documented_in_the_readme():
    commands = section("Reference: commands")
    for name in main.commands:
        assert re.search(rf"\| `squall {name}\b", commands), f"`squall {name}` has no row in the README's command table"
        assert f"squall {name}" in readme()
    documented = {re.match(r"`squall (\w+)", row[0]).group(1) for row in table_rows(commands) if row[0].startswith("`squall")}
    assert documented == set(main.commands), "the README's command table and the CLI disagree"


def test_every_cli_option_is_documented_in_the_readme():
    commands = section("Reference: commands")
    spec_options = {option(name) for name in JobSpec.model_fields}
    for name, command in main.commands.items():
        row = next(r for r in table_rows(commands) if r[0].startswith(f"`squall {name}"))
        takes_spec = any(param.name == "spec_file" for param in command.params)
        if takes_spec:
            assert "`--spec FILE`" in row[2] and "every spec field" in row[2], f"`squall {name}` row must say it takes the spec"
        for param in command.params:
            if param.param_type_name != "option":
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                spec_flag = flag in spec_options or (flag.startswith("--no-") and "--" + flag[5:] in spec_options)
                if takes_spec and spec_flag:
                    continue  # documented in the spec field table
                assert f"`{flag}" in row[2], f"`squall {name} {flag}` is not documented in the command table"


def test_readme_shows_the_two_setup_commands():
    setup = section("Set up")
    block = "\n".join(code_blocks(setup, "sh"))
    assert re.search(r"^make demo\b", block, flags=re.MULTILINE)
    assert re.search(r"^make test\b", block, flags=re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\t.*squall demo", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:.*\n\t.*pytest", makefile, flags=re.MULTILINE)


def test_readme_names_every_output_layout_entry():
    text = section("Output layout")
    for name in (layout.TMP_DIR, layout.ERRORS_DIR, layout.OWNER_FILE, layout.MANIFEST_FILE, layout.SUCCESS_FILE):
        assert name in text, f"the output layout section does not mention {name}"
    assert "part-00000.parquet" in text


def test_readme_lists_every_input_format_extension_and_model_flavor():
    inputs = section("Inputs")
    for name in format_names():
        assert f"`{name}`" in inputs
    for extension in _EXTENSIONS:
        assert f"`{extension}`" in inputs, f"input extension {extension} is not documented"
    models = section("Models")
    for name in flavor_names():
        assert f"`{name}`" in models, f"model flavor {name} is not documented"
    for extension in MODEL_EXTENSIONS:
        assert f"`{extension}`" in models


def test_every_job_result_field_is_documented():
    documented = {row[0].strip("`") for row in table_rows(section("The Python API"))}
    for field in dataclasses.fields(JobResult):
        assert field.name in documented, f"JobResult.{field.name} is not documented"


def test_documented_exit_codes_are_the_codes_squall_uses():
    rows = {row[0].strip("`"): row[1] for row in table_rows(section("Exit codes"))}
    assert set(rows) == {"0", "1", "2", "130"}
    assert SquallError.exit_code == 1 and "FAILED" in rows["1"]
    assert UsageError.exit_code == 2 and "bad usage" in rows["2"]
    assert JobCancelled.exit_code == 130 and "squall cancel" in rows["130"]


def test_every_job_state_is_documented_with_its_success_marker():
    states = {row[0].strip("`"): row for row in table_rows(section("Job states and `_SUCCESS`"))}
    assert set(states) == {"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"}
    assert [states[s][3] for s in ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED")] == ["yes", "yes", "no", "no"]


@pytest.fixture
def tour_dir(tmp_path: Path, linear_model: Path) -> Path:
    """What the tour assumes: `model.joblib` and `data/*.parquet` files with an `id` column, in the current directory."""
    shutil.copy(linear_model, tmp_path / "model.joblib")
    for index in range(3):
        write_frame(make_frame(1_000, seed=index, start=index * 1_000), tmp_path / "data" / f"part-{index}.parquet", "parquet")
    return tmp_path


def test_the_tour_s_first_command_runs_as_written(tour_dir: Path):
    block = code_blocks(section("Run a job"), "sh")[0]
    words = shlex.split(block.strip())
    assert words[:2] == ["squall", "run"]
    result = run_cli(*words[1:], "--workers", "2", "--quiet", cwd=tour_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job ")
    predictions = pd.read_parquet(tour_dir / "preds")
    assert list(predictions.columns) == ["id", "prediction"] and sorted(predictions["id"]) == list(range(3_000))


def test_the_tour_s_spec_file_plans_and_runs_as_written(tour_dir: Path):
    (tour_dir / "job.toml").write_text(code_blocks(section("The same job from a spec file"), "toml")[0])
    plan = run_cli("plan", "--spec", "job.toml", "--workers", "2", "--json", cwd=tour_dir)
    assert plan.returncode == 0, plan.stderr
    run = run_cli("run", "--spec", "job.toml", "--workers", "2", "--quiet", cwd=tour_dir)
    assert run.returncode == 0, run.stderr
    predictions = pd.read_parquet(tour_dir / "preds")
    assert list(predictions.columns) == ["id", "prediction_False", "prediction_True"] and len(predictions) == 3_000


def test_the_python_api_example_runs_as_written_and_the_output_reads_back(tour_dir: Path):
    api_example = code_blocks(section("The Python API"), "python")[0]
    reading = code_blocks(section("Read the output"), "python")[0].splitlines()
    script = "\n".join([api_example, *reading[:3], "assert len(predictions) == result.rows_out == 3000"])
    result = subprocess.run([sys.executable, "-c", script], cwd=tour_dir, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUCCEEDED 3000 3000 0")
