"""``squall deploy aws``: parse, take the limits from the spec (file, ``SQUALL_*``, options), print or deploy.

The deployment's memory, timeout and concurrency are the spec's ``memory``,
``timeout`` and ``workers`` (options override them), so a spec written by
``squall tune`` deploys with the limits it measured; ``--plan`` plans the
spec's job under the deployment's limits and prints the forecast's warnings.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

import click

from squall.errors import SquallError, UsageError

if TYPE_CHECKING:
    from squall.backends.sqs.deploy.settings import DeploySettings
    from squall.observe.forecast import Forecast
    from squall.plan.planner import Plan
    from squall.spec import JobSpec


def _fail(error: SquallError) -> NoReturn:
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(error), err=True)
    sys.exit(error.exit_code)


def _note(text: str) -> None:
    click.echo(text, err=True)


@click.group()
def deploy() -> None:
    """Deploy squall's workers as cloud functions (AWS Lambda fed by SQS)."""


@deploy.command()
@click.option("--stack", required=True, help="Stack name; also the function's and the queues' names (NAME, NAME-results, NAME-dlq, NAME-events).")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="Spec file whose model, input, output, memory, timeout and workers are the defaults.")
@click.option("--model", "models", multiple=True, help="S3 URL of a model the function may read (repeatable); default the spec's model.")
@click.option("--input-prefix", help="S3 prefix (or glob) the function may read inputs from; default the spec's input.")
@click.option("--output-prefix", help="S3 prefix the function may write outputs under; default the spec's output.")
@click.option("--memory", type=int, help="Function memory in MB (128-10240); default the spec's memory, else 3008.")
@click.option("--timeout", type=int, help="Function timeout in seconds (1-900); default the spec's timeout, else 900.")
@click.option("--max-concurrency", type=int, help="Most concurrent functions (2-1000); default the spec's workers, else 10.")
@click.option("--max-receive-count", type=int, help="Receives of a message before SQS moves it to NAME-dlq (default 3).")
@click.option("--image", help="Image URI (ECR) built from Dockerfile.lambda; needed to deploy, not for --dry-run.")
@click.option("--architecture", type=click.Choice(["x86_64", "arm64"]), help="The image's architecture (default x86_64).")
@click.option("--trigger-prefix", help="S3 prefix whose new objects notify NAME-events (for squall serve's sqs-events trigger).")
@click.option("--schedule", help="EventBridge schedule expression that notifies NAME-events, e.g. 'rate(1 hour)'.")
@click.option("--log-retention-days", type=int, help="Days CloudWatch keeps the function's logs (default 30).")
@click.option("--plan", "show_plan", is_flag=True, help="Plan the spec's job under these limits; print the forecast and its warnings.")
@click.option("--dry-run", is_flag=True, help="Print the CloudFormation template (with --delete, what would go); touch nothing.")
@click.option("--delete", is_flag=True, help="Remove the stack (and its trigger bucket's notification).")
def aws(stack: str, spec_file: str | None, show_plan: bool, dry_run: bool, delete: bool, **options: Any) -> None:
    """Create or update (or with --delete remove) the CloudFormation stack that runs squall workers on AWS Lambda."""
    from squall.backends.sqs.deploy.aws import deploy as deploy_aws
    from squall.backends.sqs.deploy.aws import undeploy
    from squall.backends.sqs.deploy.template import template_json

    try:
        if delete and dry_run:
            click.echo(f"would delete stack {stack} and its trigger bucket's notification; nothing was touched")
            return
        if delete:
            removed = undeploy(stack, _note)
            click.echo(f"stack {stack} deleted" if removed else f"no stack {stack}: nothing to delete")
            return
        settings = _settings(stack, spec_file, options)
        _note(_describe(settings))
        if show_plan:
            _plan(spec_file, settings)
        if dry_run:
            click.echo(template_json(settings))
            return
        outputs = deploy_aws(settings, _note)
    except SquallError as error:
        _fail(error)
    for key, value in outputs.items():
        click.echo(f"{key:<20} {value}")
    _note(f"next: squall run --backend sqs --queue {stack} ... (the coordinator runs where you start it)")


def _settings(stack: str, spec_file: str | None, options: dict[str, Any]) -> DeploySettings:
    """The deployment's settings: defaults < spec file < ``SQUALL_*`` environment < options."""
    from squall.backends.sqs.deploy.settings import deploy_settings

    given = {name: value for name, value in options.items() if value not in (None, ())}
    return deploy_settings(stack=stack, **{**_from_spec(spec_file), **given})


def _from_spec(spec_file: str | None) -> dict[str, Any]:
    """The deployment options a spec file and ``SQUALL_*`` variables set."""
    from squall.spec import environment_values, load_spec_file

    spec = {**(load_spec_file(spec_file) if spec_file else {}), **environment_values()}
    found: dict[str, Any] = {}
    if spec.get("memory") is not None:
        found["memory"] = spec["memory"]
    if spec.get("timeout") is not None:
        found["timeout"] = math.ceil(float(spec["timeout"]))  # Lambda takes whole seconds
    if spec.get("workers") is not None:
        found["max_concurrency"] = spec["workers"]
    if spec.get("model"):
        found["models"] = (spec["model"],)
    if spec.get("output"):
        found["output_prefix"] = spec["output"]
    inputs = spec.get("input")
    inputs = [part.strip() for part in inputs.split(",")] if isinstance(inputs, str) else list(inputs or [])
    if len(inputs) == 1:
        found["input_prefix"] = inputs[0]
    return found


def _describe(settings: DeploySettings) -> str:
    return (f"stack {settings.stack}: {settings.memory} MB, timeout {settings.timeout} s (request queue visibility "
            f"{settings.visibility_timeout()} s), at most {settings.max_concurrency} concurrent functions, "
            f"SQS dead-letters a message after {settings.max_receive_count} receives")


def _plan(spec_file: str | None, settings: DeploySettings) -> None:
    """Plan the spec's job with the deployment's limits and print what ``squall plan`` would: the invocations, the
    cost and the timeout warnings, at the measured speed scaled to the function's share of a vCPU."""
    from squall import api
    from squall.observe.cost import DEFAULT_MEMORY_MB as ONE_VCPU_MB
    from squall.observe.cost import dollars
    from squall.spec import build_spec, load_spec_file

    if spec_file is None:
        raise UsageError("--plan plans the job of a spec: give --spec FILE (with its input and output)")
    limits = {"memory": settings.memory, "timeout": float(settings.timeout), "workers": settings.max_concurrency}
    spec = build_spec(load_spec_file(spec_file), limits)
    expected = _function_forecast(api.plan(spec), spec, settings.memory)
    _note(f"plan: {expected.invocations:,} invocations, {expected.rows_per_chunk[1]:,} rows per chunk (median)")
    if expected.speed is not None:
        _note(f"plan: {expected.speed.rows_per_s:,.0f} rows/s per function (job {expected.speed.job_id}'s speed "
              f"on one core, × {min(1.0, settings.memory / ONE_VCPU_MB):.2f} of a vCPU at {settings.memory} MB)")
    if expected.cost is not None:
        _note(f"plan: about {dollars(expected.cost.function_total)} per run as functions "
              f"({expected.cost.gb_seconds:,.1f} GB-s at {settings.memory} MB)")
    for warning in expected.warnings:
        if "cores" not in warning:  # functions do not share this machine's cores
            _note(f"plan warning: {warning}")


def _function_forecast(job_plan: Plan, spec: JobSpec, memory: int) -> Forecast:
    """The forecast at the speed measured on one core here, times the share of a vCPU Lambda gives ``memory``:
    a single-threaded model at 576 MB runs at a third of its speed on a full core."""
    # Lambda gives one full vCPU at 1,769 MB, the memory squall bills an invocation at when no limit is set
    from squall.observe.cost import DEFAULT_MEMORY_MB as ONE_VCPU_MB
    from squall.observe.forecast import forecast, measured_speed
    from squall.store import JobStore

    with JobStore.at(spec.state_dir) as store:
        speed = measured_speed(store, spec)
    if speed is not None:
        speed = replace(speed, rows_per_s=speed.rows_per_s * min(1.0, memory / ONE_VCPU_MB))
    return forecast(job_plan, spec, speed)
