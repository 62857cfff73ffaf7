"""The ``squall`` command line. Thin: parse, build the spec, call :mod:`squall.api`, print.

Every ``JobSpec`` field is an option of ``run`` and ``plan`` (``chunk_rows``
is ``--chunk-rows``), generated from the spec itself so the two never drift.
Exit codes: 0 success (SUCCEEDED or PARTIAL), 1 the job failed, 2 bad usage, spec, input, model or output.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn, Union, get_args, get_origin

import click
from rich.console import Console

from squall.cli_deploy import deploy
from squall.errors import SquallError, UsageError
from squall.spec import JobSpec, backend_option_names, build_spec, load_spec_file
from squall.states import JobState

if TYPE_CHECKING:
    from squall.tuning.tuner import Tuning

_FLAG_HELP = {"input": "Input path, directory, glob or URL (repeatable, or comma-separated)."}


def _spec_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per spec field and per backend option (``--ray-address``), all defaulting to "not given"
    so the spec file can set them."""
    aliases = _backend_option_aliases()
    for name, field in reversed([*JobSpec.model_fields.items(), *_backend_option_fields()]):
        declared = [*_option_decl(name, field.annotation), *aliases.get(name, ())]
        command = click.option(*declared, default=None, help=_FLAG_HELP.get(name, field.description), **_option_kind(field.annotation))(command)
    return click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="TOML or JSON spec file; options override it.")(command)


def _backend_option_fields() -> list[tuple[str, Any]]:
    """Each registered backend's options by their flat names (``ray_address``), with their pydantic fields."""
    from squall.backends.registry import BACKENDS

    return [
        (name, BACKENDS.load(backend).Options.model_fields[option])
        for name, (backend, option) in backend_option_names().items()
    ]


def _backend_option_aliases() -> dict[str, tuple[str, ...]]:
    """The shorter flags a backend gives some of its options (``--queue`` for ``--sqs-queue``), by flat name."""
    from squall.backends.registry import BACKENDS

    aliases: dict[str, tuple[str, ...]] = {}
    for name, (backend, option) in backend_option_names().items():
        flag = BACKENDS.load(backend).Options.cli_aliases.get(option)
        if flag:
            aliases[name] = (flag,)
    return aliases


def _option_decl(name: str, annotation: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if _base(annotation) is bool:
        return [f"{flag}/--no-{name.replace('_', '-')}", name]
    return [flag, name]


def _option_kind(annotation: Any) -> dict[str, Any]:
    base = _base(annotation)
    if get_origin(base) is Literal:
        return {"type": click.Choice([str(v) for v in get_args(base)])}
    if get_origin(base) is list:
        return {"multiple": True}
    if base is bool:
        return {}
    return {"type": {int: int, float: float}.get(base, str)}


def _base(annotation: Any) -> Any:
    """The option's type: the annotation without ``None``; ``str`` for a choice of types (the spec validates it)."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else str
    return annotation


def _spec_from(spec_file: str | None, options: dict[str, Any]) -> JobSpec:
    explicit = {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    explicit = {k: v for k, v in explicit.items() if v not in (None, "")}
    return build_spec(load_spec_file(spec_file) if spec_file else None, explicit)


def _stderr() -> Console:
    return Console(stderr=True)


def _stdout() -> Console:
    return Console()


def _fail(console: Console, error: SquallError) -> NoReturn:
    console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    sys.exit(error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="squall")
def main() -> None:
    """squall: batch prediction the serverless way. Nothing lost, memory bounded, every core busy."""


@main.command()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; print only the job id and the final state.")
@_spec_options
def run(spec_file: str | None, quiet: bool, **options: Any) -> None:
    """Run a batch prediction job to completion."""
    from squall import api

    try:
        spec = _spec_from(spec_file, options)
    except SquallError as error:
        _fail(_stderr(), error)
    job_id = spec.job_id or api.new_job_id()
    click.echo(f"job {job_id}")
    _run_and_summarise(lambda listeners: api.run(spec, listeners=listeners, job_id=job_id), quiet, job_id, spec.state_dir)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_spec_options
def plan(spec_file: str | None, as_json: bool, **options: Any) -> None:
    """Show the chunks a job would run (rows and bytes each), the invocations, duration and cost to expect, and warnings."""
    from squall import api
    from squall.observe.planview import plan_json, plan_table

    console = _stdout()
    try:
        spec = _spec_from(spec_file, options)
        job_plan = api.plan(spec)
        expected = api.forecast(job_plan, spec)
    except SquallError as error:
        _fail(_stderr(), error)
    if as_json:
        click.echo(json.dumps(plan_json(job_plan, spec, expected), indent=2))
    else:
        plan_table(console, job_plan, spec, expected)


@main.command()
@click.option("--objective", type=click.Choice(["time", "cost"]), default="time", show_default=True, help="Minimise wall time or cost.")
@click.option("--sample-rows", type=int, default=50_000, show_default=True, help="Rows of the input to measure on.")
@click.option("-o", "--output-spec", "out", type=click.Path(dir_okay=False), help="Where to write the tuned spec (default SPEC.tuned.toml, or tuned.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements and recommendation as JSON.")
@_spec_options
def tune(spec_file: str | None, objective: str, sample_rows: int, out: str | None, as_json: bool, **options: Any) -> None:
    """Measure the model on a sample of the input; recommend batch_size, chunk_rows, workers, memory; write the tuned spec."""
    from pathlib import Path

    from squall import api
    from squall.tuning.tuner import write_tuned

    try:
        spec = _spec_from(spec_file, options)
        explicit = {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in options.items() if v not in (None, "", ())}
        values = {**(load_spec_file(spec_file) if spec_file else {}), **explicit}
        found = api.tune(spec, values, objective, sample_rows)
    except SquallError as error:
        _fail(_stderr(), error)
    path = out or (str(Path(spec_file).with_suffix(".tuned.toml")) if spec_file else "tuned.toml")
    write_tuned(found, path, spec_file)
    if as_json:
        click.echo(json.dumps({**found.to_dict(), "spec": path}, indent=2))
    else:
        _print_tuning(found, path)


def _print_tuning(found: Tuning, path: str) -> None:
    from squall.observe.cost import dollars

    rec = found.recommendation
    console = _stdout()
    for run in rec.runs:
        console.print(f"batch_size {run.batch_size:>6,}: {run.rows_per_s:>12,.0f} rows/s, peak {run.peak_mb:,.0f} MB", highlight=False)
    console.print(
        f"recommended ({rec.objective}): batch_size={rec.batch_size} chunk_rows={rec.chunk_rows} workers={rec.workers} "
        f"memory={rec.memory}; ~{rec.est_wall_s:,.2f} s of predicting for {found.total_rows:,} rows, "
        f"{dollars(rec.est_function_usd)} as functions, {dollars(rec.est_vm_usd)} on one VM", highlight=False,
    )
    console.print(f"tuned spec written to {path}", highlight=False)


@main.command()
@click.argument("job_id", required=False)
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(job_id: str | None, state_dir: str | None, as_json: bool) -> None:
    """State, counts and throughput of a job; with no JOB_ID, the recent jobs."""
    from squall import api
    from squall.observe.statusview import status_table

    console = _stdout()
    try:
        found = [api.status(job_id, state_dir)] if job_id else api.jobs(state_dir)
    except SquallError as error:
        _fail(_stderr(), error)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found] if not job_id else found[0].to_dict(), indent=2))
    else:
        status_table(console, found, detailed=bool(job_id))


_STORAGE_OPTIONS_HELP = ("The job's storage options again, as JSON (secrets are not stored with a job), e.g. "
                         '\'{"key": "…", "secret": "…"}\'; "endpoint_url" sets the endpoint.')


def _storage_options(text: str | None) -> dict[str, Any] | None:
    """``--storage-options`` JSON as a mapping; a usage error naming the option if it is not a JSON object."""
    if text is None:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        _fail(_stderr(), UsageError('--storage-options must be a JSON object, e.g. \'{"key": "…", "secret": "…"}\''))
    return found


@main.command()
@click.argument("job_id")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
@click.option("--storage-options", "options", help=_STORAGE_OPTIONS_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def resume(job_id: str, state_dir: str | None, options: str | None, quiet: bool) -> None:
    """Finish a job whose coordinator stopped (killed, cancelled); committed parts are kept."""
    from squall import api

    given = _storage_options(options)
    _run_and_summarise(lambda listeners: api.resume(job_id, state_dir, listeners, given), quiet, job_id, state_dir)


def _run_and_summarise(start: Callable[[list[Any]], Any], quiet: bool, job_id: str, state_dir: str | None) -> None:
    """Run job ``job_id`` with a progress bar (unless quiet), print its summary, exit with its code."""
    from squall.observe.progress import ProgressBar, summary_table

    console = _stderr()
    _stop_on_sigterm()
    bar = None if quiet else ProgressBar(console)
    try:
        try:
            result = start([bar] if bar else [])
        finally:
            if bar:
                bar.stop()
    except SquallError as error:
        _fail(console, error)
    except KeyboardInterrupt:
        _stopped(console, job_id, state_dir)
    _ignore_stops()  # the job has ended: a stop now would change nothing but the exit code
    if quiet:
        click.echo(f"{result.state} {result.rows_in} rows in {result.wall_s:.2f} s")
    else:
        console.print(summary_table(result))
    _exit_now(0 if JobState(result.state).succeeded else 1)


def _exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, which with pyarrow and pandas loaded costs a small
    job a tenth of a second: the job is over, its store, log and output are closed, and what remains to
    write (this process's own output and log records) is flushed first."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stopped(console: Console, job_id: str, state_dir: str | None) -> NoReturn:
    """Ctrl-C or SIGTERM stopped the command: exit 130, unless the job had already ended (the stop came while
    the command was wrapping up), which keeps the job's own exit code."""
    from squall import api

    _ignore_stops()
    try:
        state = api.status(job_id, state_dir).job.state
    except SquallError:
        state = None  # stopped before the job was created
    if state is not None and not JobState(state).active and state != JobState.CANCELLED:
        console.print(f"[yellow]stopped after job {job_id} ended {state}.", highlight=False)
        sys.exit(0 if JobState(state).succeeded else 1)
    console.print(f"[yellow]stopped; committed parts are kept. `squall resume {job_id}` finishes the job.", highlight=False)
    sys.exit(130)


def _ignore_stops() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_on_sigterm() -> None:
    """SIGTERM stops a job the way Ctrl-C does: cleanly, keeping what was committed."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@main.command()
@click.argument("job_id", required=False)
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
@click.option("--queue", help="Instead of a job: list the SQS dead-letter queue of this request queue (NAME-dlq).")
@click.option("--region", help="AWS region of --queue; default $AWS_REGION.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def dlq(job_id: str | None, state_dir: str | None, queue: str | None, region: str | None, as_json: bool) -> None:
    """List a job's dead-lettered chunks with every attempt's reason and timings, or (--queue) the messages in an
    SQS dead-letter queue with the reason a worker refuses each."""
    from squall import api
    from squall.observe.statusview import dlq_table

    if (job_id is None) == (queue is None):
        _fail(_stderr(), UsageError("give a JOB_ID, or --queue NAME for an SQS dead-letter queue"))
    try:
        dead: list[Any] = api.dead_letters(job_id, state_dir) if job_id else _refused_messages(queue or "", region)
    except SquallError as error:
        _fail(_stderr(), error)
    if as_json:
        click.echo(json.dumps([d.__dict__ for d in dead], indent=2, default=str))
    elif job_id:
        dlq_table(_stdout(), dead)
    else:
        _refused_table(dead)


def _refused_messages(queue: str, region: str | None) -> list[Any]:
    from squall.backends.sqs.dead_letters import refused_messages

    return list(refused_messages(queue, region))


def _refused_table(messages: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(messages)} message(s) in the SQS dead-letter queue")
    for column in ("message", "sent", "what", "why it is refused"):
        table.add_column(column, overflow="fold")
    for message in messages:
        sent = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(message.sent_at))
        table.add_row(message.message_id, sent, message.what, message.reason)
    _stdout().print(table)


@main.command()
@click.option("--queue", required=True, help="The SQS request queue to consume (a name or a queue URL).")
@click.option("--region", help="AWS region of the queue; default $AWS_REGION / $AWS_DEFAULT_REGION.")
@click.option("--wait-s", type=click.IntRange(0, 20), default=20, show_default=True, help="Seconds one long poll waits for a message.")
@click.option("--visibility-s", type=click.IntRange(5, 43_200), default=60, show_default=True,
              help="Seconds a message in work stays hidden from other workers; extended while it runs.")
@click.option("--processes", type=click.IntRange(1), default=1, show_default=True, help="Consumer processes to run.")
@click.option("--max-messages", type=int, help="Each process exits after this many messages (default: run until SIGTERM).")
def worker(queue: str, region: str | None, wait_s: int, visibility_s: int, processes: int, max_messages: int | None) -> None:
    """Consume an SQS request queue: run each dispatched chunk, keep the model warm, report, repeat."""
    import logging
    import os

    from squall.backends.sqs.queues import Queue
    from squall.backends.sqs.worker import WorkerSettings, supervise

    logging.basicConfig(level=os.environ.get("SQUALL_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        Queue.named(queue, region)  # a queue that is not there is a usage error now, not in each process
    except SquallError as error:
        _fail(_stderr(), error)
    sys.exit(supervise(WorkerSettings(queue, region, wait_s, visibility_s, max_messages), processes))


@main.command()
@click.argument("job_id")
@click.option("--chunk", "chunks", type=int, multiple=True, help="Only this dead chunk (repeatable).")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
@click.option("--timeout", type=float, help="New invocation time limit in seconds.")
@click.option("--memory", type=int, help="New worker memory limit in MB.")
@click.option("--max-attempts", type=int, help="New number of attempts per chunk.")
@click.option("--workers", type=int, help="New number of workers.")
@click.option("--batch-lane/--no-batch-lane", default=None, help="Enable the batch lane for chunks that cannot be split.")
@click.option("--storage-options", "options", help=_STORAGE_OPTIONS_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def redrive(job_id: str, chunks: tuple[int, ...], state_dir: str | None, options: str | None, quiet: bool,
            **limits: Any) -> None:
    """Put dead chunks back on the queue (optionally with new limits) and finish the job."""
    from squall import api

    overrides = {name: value for name, value in limits.items() if value is not None}
    given = _storage_options(options)
    _run_and_summarise(
        lambda listeners: api.redrive(job_id, list(chunks) or None, state_dir, overrides, listeners, given),
        quiet, job_id, state_dir,
    )


@main.command()
@click.argument("job_id")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
@click.option("--storage-options", "options", help=_STORAGE_OPTIONS_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def replay(job_id: str, state_dir: str | None, options: str | None, quiet: bool) -> None:
    """Run again, with the current model, only the rows in _errors/ and in dead chunks; merge them in."""
    from squall import api

    given = _storage_options(options)
    _run_and_summarise(lambda listeners: api.replay(job_id, state_dir, listeners, given), quiet, job_id, state_dir)


@main.command()
@click.argument("old")
@click.argument("new")
@click.option("--key", required=True, help="Key column(s) that identify a row in both outputs (comma-separated).")
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Largest numeric change that counts as unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def diff(old: str, new: str, key: str, tolerance: float, as_json: bool) -> None:
    """How many predictions changed, appeared or disappeared between two outputs (check a model update)."""
    from squall.diff import diff_outputs

    try:
        found = diff_outputs(old, new, [k.strip() for k in key.split(",") if k.strip()], tolerance)
    except SquallError as error:
        _fail(_stderr(), error)
    if as_json:
        click.echo(json.dumps(found.__dict__, indent=2))
        return
    click.echo(
        f"{found.rows_old:,} rows before, {found.rows_new:,} after: {found.unchanged:,} unchanged, "
        f"{found.changed:,} changed, {found.appeared:,} appeared, {found.disappeared:,} disappeared"
    )
    for column, change in found.max_change.items():
        click.echo(f"  {column}: largest change {change:.6g}")


@main.command()
@click.argument("job_id")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False), help="Write the report here (default report-JOB_ID.html, or stdout for json).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True, help="A self-contained HTML page, or JSON.")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
def report(job_id: str, path: str | None, fmt: str, state_dir: str | None) -> None:
    """Write a job's report: summary, timeline of invocations, throughput, durations, failures and cost."""
    from pathlib import Path

    from squall import api

    try:
        found = api.report(job_id, state_dir)
    except SquallError as error:
        _fail(_stderr(), error)
    if fmt == "json":
        text = json.dumps(found.to_dict(), indent=2)
        if path is None:
            click.echo(text)
            return
    else:
        from squall.observe.report_html import render

        text = render(found)
        path = path or f"report-{job_id}.html"
    Path(path).write_text(text, encoding="utf-8")
    click.echo(f"report written to {path}")


@main.command()
@click.argument("job_id")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
def cancel(job_id: str, state_dir: str | None) -> None:
    """Ask a running job to stop; what was committed is kept and `squall resume` can finish it."""
    from squall import api

    try:
        api.cancel(job_id, state_dir)
    except SquallError as error:
        _fail(_stderr(), error)
    click.echo(f"cancel requested for job {job_id}")


@main.command()
@click.argument("location")
@click.option("--spec", "template_file", required=True, type=click.Path(dir_okay=False), help="Spec template (TOML or JSON); `{stem}`, `{file}`, `{date}`... are filled per file.")
@click.option("--pattern", default="*", show_default=True, help="Glob a file name must match, e.g. '*.parquet'.")
@click.option("--settle-s", type=float, default=2.0, show_default=True, help="A file counts once its size was unchanged this long.")
@click.option("--poll-s", type=float, default=1.0, show_default=True, help="Seconds between listings.")
@click.option("--recursive", is_flag=True, help="Also watch sub-folders (sub-prefixes).")
@click.option("--once", is_flag=True, help="Process the files there now, then exit.")
def watch(location: str, template_file: str, pattern: str, settle_s: float, poll_s: float, recursive: bool, once: bool) -> None:
    """Run one job per new file in a folder or object-store prefix; each file once, remembered across restarts."""
    import threading

    from squall.triggers.rules import watch_rule
    from squall.triggers.watch import watch as watch_files

    def done(file: str, job_id: str, state: str | None, rows: int | None) -> None:
        click.echo(f"{file} -> {job_id} -> {state}" + (f", {rows} rows" if rows is not None else ""))

    _stop_on_sigterm()
    try:
        rule = watch_rule(location=location, spec=template_file, pattern=pattern, settle_s=settle_s, poll_s=poll_s, recursive=recursive)
        if not once:
            click.echo(f"watching {location} (Ctrl-C stops)", err=True)
        watch_files(rule, threading.Event(), once, done)
    except SquallError as error:
        _fail(_stderr(), error)
    except KeyboardInterrupt:
        _stderr().print("[yellow]stopped; files already started are remembered, and an interrupted job is finished on restart.")
        sys.exit(130)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1); beyond loopback a token is required.")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8700).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Serve config (TOML), e.g. squall-serve.toml.")
@click.option("--state-dir", help="Where job state lives; default $SQUALL_HOME or ~/.squall.")
def serve(host: str | None, port: int | None, config_file: str | None, state_dir: str | None) -> None:
    """Run the HTTP API and dashboard; jobs run in the server's worker pool."""
    from squall.service.config import load_config
    from squall.service.server import serve as run_service

    try:
        config = load_config(config_file, {"host": host, "port": port, "state_dir": state_dir})
        run_service(config)
    except SquallError as error:
        _fail(_stderr(), error)


@main.command()
@click.option("--dir", "directory", default="demo-run", show_default=True, help="Folder for the demo's data, model and output.")
@click.option("--rows", default=200_000, show_default=True, help="Rows of generated data.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: one per core).")
def demo(directory: str, rows: int, workers: int | None) -> None:
    """Generate a dataset and a scikit-learn model, then run a real batch prediction on them."""
    from squall.demo import run_demo

    try:
        sys.exit(run_demo(directory, rows, workers))
    except UsageError as error:
        _fail(_stderr(), error)


main.add_command(deploy)


if __name__ == "__main__":  # pragma: no cover
    main()
