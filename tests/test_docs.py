"""The docs say what the code does: every spec field, command and option in docs/reference.md, examples that run
as written, a README that stays a first screen, and a site that builds with --strict (no broken link or page)."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from support.cli import run_cli
from support.data import make_frame, write_frame

from squall.cli import main
from squall.errors import JobCancelled, SquallError, UsageError
from squall.formats.registry import FORMATS, format_names
from squall.io import layout
from squall.models.registry import FLAVORS, flavor_names
from squall.result import JobResult
from squall.spec import JobSpec, backend_option_names

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
FIRST_COMMAND_BY_LINE = 20


def readme() -> str:
    return README.read_text()


def page(name: str) -> str:
    """The Markdown of ``docs/<name>``."""
    return (DOCS / name).read_text()


def all_docs() -> str:
    return "\n".join(path.read_text() for path in sorted(DOCS.glob("*.md")))


def section(text: str, heading: str) -> str:
    """The part of ``text`` under the Markdown heading ``heading`` up to the next heading of the same or a higher level."""
    lines: list[str] = []
    level, inside, fenced = 0, False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"(#+) (.*?)\s*$", line)
        if match and inside and len(match.group(1)) <= level:
            break
        if inside:
            lines.append(line)
        elif match and match.group(2) == heading:
            inside, level = True, len(match.group(1))
    assert inside, f"no heading {heading!r} there"
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
    rows = table_rows(section(page("reference.md"), "Spec fields"))
    return {row[0].strip("`"): row for row in rows if row[0].startswith("`")}


def commands_section() -> str:
    return section(page("reference.md"), "Commands")


def test_every_spec_field_is_documented_in_the_reference():
    table = spec_table()
    for name, field in JobSpec.model_fields.items():
        assert name in table, f"spec field `{name}` has no row in docs/reference.md's spec field table"
        row = table[name]
        assert row[0] == f"`{name}`"
        assert f"`{option(name)}`" in row[1], f"the row of `{name}` does not name its option {option(name)}"
        assert row[3], f"the row of `{name}` does not say what it means"
    assert len(table) == len(JobSpec.model_fields)


def test_the_reference_table_documents_no_field_the_spec_lacks():
    stale = sorted(set(spec_table()) - set(JobSpec.model_fields))
    assert not stale, f"docs/reference.md documents spec fields that do not exist: {stale}"


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
        assert table[name][2] == _documented_default(name), f"docs/reference.md states the wrong default for `{name}`"


def test_every_backend_option_is_documented_with_its_flag_and_real_default():
    from squall.backends.registry import BACKENDS

    for backend in BACKENDS.names():
        fields = BACKENDS.load(backend).Options.model_fields
        if not fields:
            continue
        rows = {row[0].strip("`"): row for row in table_rows(section(page("reference.md"), f"`{backend}`"))}
        assert set(rows) == set(fields), f"docs/reference.md's `{backend}` options table and its options model disagree"
        for name, field in fields.items():
            assert f"`--{backend}-{name.replace('_', '-')}`" in rows[name][1]
            value = field.get_default(call_default_factory=True)
            shown = "unset" if value is None else (f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`")
            assert rows[name][2] == shown, f"docs/reference.md states the wrong default for `{backend}.{name}`"


def test_every_cli_command_is_documented_in_the_reference():
    commands = commands_section()
    for name in main.commands:
        assert re.search(rf"\| `squall {name}\b", commands), f"`squall {name}` has no row in the command table"
        assert f"squall {name}" in all_docs()
    documented = {match.group(1) for row in table_rows(commands) if (match := re.match(r"`squall (\w+)", row[0]))}
    assert documented == set(main.commands), "docs/reference.md's command table and the CLI disagree"


def test_every_cli_option_is_documented_in_the_reference():
    commands = commands_section()
    spec_options = {option(name) for name in [*JobSpec.model_fields, *backend_option_names()]}  # both tables above
    spec_options |= backend_option_aliases()  # the short flags, documented in the backend options tables
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


def backend_option_aliases() -> set[str]:
    """The short flags backends give some options (``--queue``), each documented beside its option's own flag."""
    from squall.backends.registry import BACKENDS

    aliases: set[str] = set()
    for backend in BACKENDS.names():
        options = BACKENDS.load(backend).Options
        for name, flag in options.cli_aliases.items():
            assert f"`{flag}`" in section(page("reference.md"), f"`{backend}`"), f"{flag} is not in the `{backend}` table"
            aliases.add(flag)
    return aliases


def _recipe(target: str) -> list[str]:
    """The commands ``make TARGET`` runs, as make expands them (``-n``), the virtual environment taken as installed."""
    stamps = [arg for stamp in (".installed-demo", ".installed-docs", ".installed-test") for arg in ("-o", f".venv/{stamp}")]
    result = subprocess.run(["make", "-n", *stamps, target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_readme_and_docs_show_the_two_setup_commands_the_makefile_runs():
    for where, text in (("README.md", readme()), ("docs/index.md", page("index.md"))):
        block = "\n".join(code_blocks(section(text, "Set up"), "sh"))
        assert re.search(r"^make demo\b", block, flags=re.MULTILINE), f"{where} does not show `make demo`"
        assert re.search(r"^make test\b", block, flags=re.MULTILINE), f"{where} does not show `make test`"
    assert any("squall demo" in line for line in _recipe("demo"))
    test = _recipe("test")
    pytest_at = next(i for i, line in enumerate(test) if "pytest" in line)
    docs_at = next(i for i, line in enumerate(test) if "mkdocs build --strict" in line)
    assert docs_at < pytest_at, "`make test` must build the docs (strict) before it runs the suite"
    assert any(re.search(r"mkdocs build --strict .*--site-dir site\b", line) for line in _recipe("docs"))
    assert re.search(r"^site/$", (ROOT / ".gitignore").read_text(), flags=re.MULTILINE)


def test_the_output_page_names_every_output_layout_entry():
    text = section(page("output.md"), "Output layout")
    for name in (layout.TMP_DIR, layout.ERRORS_DIR, layout.OWNER_FILE, layout.MANIFEST_FILE, layout.SUCCESS_FILE):
        assert name in text, f"the output layout section does not mention {name}"
    assert "part-00000.parquet" in text


def test_the_readme_shows_what_a_run_writes():
    block = code_blocks(section(readme(), "What it writes"), "")[0]
    for name in ("part-00000.parquet", layout.ERRORS_DIR + "/", layout.MANIFEST_FILE, layout.SUCCESS_FILE):
        assert name in block, f"README.md's output folder does not show {name}"


def test_the_docs_list_every_input_format_extension_and_model_flavor():
    inputs = section(page("inputs.md"), "Inputs")
    for name in format_names():
        assert f"`{name}`" in inputs
    for extension in FORMATS.extensions():
        assert f"`{extension}`" in inputs, f"input extension {extension} is not documented"
    models = section(page("models.md"), "Models")
    for name in flavor_names():
        assert f"`{name}`" in models, f"model flavor {name} is not documented"
    for extension in FLAVORS.extensions():
        assert f"`{extension}`" in models


def test_every_job_result_field_is_documented():
    documented = {row[0].strip("`") for row in table_rows(section(page("reference.md"), "The Python API"))}
    for field in dataclasses.fields(JobResult):
        assert field.name in documented, f"JobResult.{field.name} is not documented"


def test_documented_exit_codes_are_the_codes_squall_uses():
    rows = {row[0].strip("`"): row[1] for row in table_rows(section(page("reference.md"), "Exit codes"))}
    assert set(rows) == {"0", "1", "2", "130"}
    assert SquallError.exit_code == 1 and "FAILED" in rows["1"]
    assert UsageError.exit_code == 2 and "bad usage" in rows["2"]
    assert JobCancelled.exit_code == 130 and "squall cancel" in rows["130"]


def test_every_job_state_is_documented_with_its_success_marker():
    states = {row[0].strip("`"): row for row in table_rows(section(page("reference.md"), "Job states and `_SUCCESS`"))}
    assert set(states) == {"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"}
    assert [states[s][3] for s in ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED")] == ["yes", "yes", "no", "no"]


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_the_readme_is_a_first_screen_that_links_to_every_docs_page():
    text = readme()
    lines = text.splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"
    first_command = next(i for i, line in enumerate(lines, start=1) if line.startswith("make demo"))
    assert first_command <= FIRST_COMMAND_BY_LINE, f"README.md's first command is on line {first_command}"
    links = re.findall(r"\]\((docs/[^)#]*)(?:#([^)]*))?\)", text)
    linked = set()
    for target, anchor in links:
        path = ROOT / target
        assert path.is_file(), f"README.md links to {target}, which does not exist"
        linked.add(path.name)
        if anchor:
            anchors = {_slug(h) for h in re.findall(r"^#+ (.*?)\s*$", path.read_text(), flags=re.MULTILINE)}
            assert anchor in anchors, f"README.md links to {target}#{anchor}, which has no such heading"
    pages = {path.name for path in DOCS.glob("*.md")}
    assert linked == pages, f"README.md does not link to {sorted(pages - linked)}"


def _build_docs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_docs_site_builds_with_strict(tmp_path: Path):
    result = _build_docs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    for path in DOCS.glob("*.md"):
        built = "index.html" if path.stem == "index" else f"{path.stem}/index.html"
        assert (tmp_path / "site" / built).is_file(), f"docs/{path.name} was not built"


def test_the_strict_docs_build_fails_on_a_broken_link(tmp_path: Path):
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    failures = tmp_path / "docs" / "failures.md"
    failures.write_text(failures.read_text() + "\nSee [the exit codes](reference.md#no-such-heading).\n")
    result = _build_docs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-heading" in result.stderr


@pytest.fixture
def tour_dir(tmp_path: Path, linear_model: Path) -> Path:
    """What the tour assumes: `model.joblib` and `data/*.parquet` files with an `id` column, in the current directory."""
    shutil.copy(linear_model, tmp_path / "model.joblib")
    for index in range(3):
        write_frame(make_frame(1_000, seed=index, start=index * 1_000), tmp_path / "data" / f"part-{index}.parquet", "parquet")
    return tmp_path


def test_the_tour_s_first_command_runs_as_written(tour_dir: Path):
    block = code_blocks(section(page("tour.md"), "Run a job"), "sh")[0]
    assert code_blocks(section(readme(), "Run a job"), "sh")[0] == block, "README.md and the tour show different commands"
    words = shlex.split(block.strip())
    assert words[:2] == ["squall", "run"]
    result = run_cli(*words[1:], "--workers", "2", "--quiet", cwd=tour_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job ")
    predictions = pd.read_parquet(tour_dir / "preds")
    assert list(predictions.columns) == ["id", "prediction"] and sorted(predictions["id"]) == list(range(3_000))


def test_the_tour_s_spec_file_plans_and_runs_as_written(tour_dir: Path):
    (tour_dir / "job.toml").write_text(code_blocks(section(page("tour.md"), "The same job from a spec file"), "toml")[0])
    plan = run_cli("plan", "--spec", "job.toml", "--workers", "2", "--json", cwd=tour_dir)
    assert plan.returncode == 0, plan.stderr
    run = run_cli("run", "--spec", "job.toml", "--workers", "2", "--quiet", cwd=tour_dir)
    assert run.returncode == 0, run.stderr
    predictions = pd.read_parquet(tour_dir / "preds")
    assert list(predictions.columns) == ["id", "prediction_False", "prediction_True"] and len(predictions) == 3_000


def test_the_python_api_example_runs_as_written_and_the_output_reads_back(tour_dir: Path):
    api_example = code_blocks(section(page("tour.md"), "The Python API"), "python")[0]
    reading = code_blocks(section(page("tour.md"), "Read the output"), "python")[0].splitlines()
    script = "\n".join([api_example, *reading[:3], "assert len(predictions) == result.rows_out == 3000"])
    result = subprocess.run([sys.executable, "-c", script], cwd=tour_dir, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUCCEEDED 3000 3000 0")


# Appended to the README's example: its predictions are the model's own, row for row.
_COMPARE_WITH_THE_MODEL = """
import glob, joblib
frame = pd.concat([pd.read_parquet(path) for path in sorted(glob.glob("data/*.parquet"))])
expected = joblib.load("model.joblib").predict(frame.drop(columns="id"))
merged = frame[["id"]].assign(expected=expected).merge(predictions, on="id", validate="one_to_one")
assert len(merged) == len(frame) == result.rows_out == 3000
assert (merged["prediction"] == merged["expected"]).all()
"""


def test_the_readme_s_python_example_runs_as_written_and_predicts_what_the_model_does(tour_dir: Path):
    example = code_blocks(section(readme(), "From Python"), "python")[0]
    result = subprocess.run(
        [sys.executable, "-c", example + _COMPARE_WITH_THE_MODEL], cwd=tour_dir, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUCCEEDED 3000 3000 0")
