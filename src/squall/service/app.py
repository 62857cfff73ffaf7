"""The HTTP API: ``create_app(config)`` builds the FastAPI application ``squall serve`` runs.

Routes (every one but ``/healthz`` needs the bearer token when one is set):

==========================  ====================================================================
``GET /``                   the dashboard (``/?token=T`` once sets a cookie for the browser)
``GET /healthz``            liveness (no token needed)
``GET /openapi.json``       the OpenAPI schema
``GET /metrics``            Prometheus text
``POST /jobs``              queue a job (a JobSpec as JSON, ``?priority=N``); 201 with its ``id``
``GET /jobs``               jobs newest first (``?state=&limit=&offset=``)
``GET /jobs/{id}``          state, counts, rows/s, ETA, queue position
``GET /jobs/{id}/chunks``   every chunk and its state
``GET /jobs/{id}/dlq``      dead-lettered chunks with every attempt's reason
``POST /jobs/{id}/cancel``  cancel a queued or running job
``POST /jobs/{id}/redrive`` queue the dead chunks again
``POST /jobs/{id}/resume``  queue a stopped job to finish
``GET /jobs/{id}/report``   the job report as JSON, or ``?format=html``
``GET /jobs/{id}/timeline`` the report's chunk timeline as SVG (the dashboard shows it)
==========================  ====================================================================

Without a token, every route answers only requests addressed to a loopback
name (:mod:`squall.service.hosts`: a defence against DNS rebinding).
Nothing secret is served: specs, URLs and messages come from stores that
hold them redacted (:mod:`squall.secrets`).
"""

from __future__ import annotations

import threading

import re
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from squall import api
from squall.errors import JobNotFoundError, JobStateError, PathNotAllowed, SpecError, SpecRejected, UsageError
from squall.service.auth import COOKIE, TokenCheck
from squall.service.config import ServeConfig
from squall.service.dashboard import page
from squall.service.hosts import LoopbackHostsOnly
from squall.service.metrics import ServiceMetrics
from squall.service.roots import AllowedRoots
from squall.service.scheduler import Scheduler
from squall.triggers.service import start_triggers
from squall.service.views import JobViews
from squall.spec import JobSpec, build_spec, field_names
from squall.store import JobStore
from squall.states import SubmissionState

_JOB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_bearer = HTTPBearer(auto_error=False, description="The service token (SQUALL_TOKEN)")


def parse_spec(body: dict[str, Any]) -> JobSpec:
    """Validate a submitted spec as the CLI does (same messages); raises :class:`SpecRejected`."""
    values = {str(name).replace("-", "_"): value for name, value in body.items()}
    if "state_dir" in values:
        raise SpecRejected("`state_dir` is the service's own; leave it out of the spec", ["state_dir"])
    try:
        return build_spec(values, environ={})
    except SpecError as exc:
        raise SpecRejected(str(exc), _fields_at_fault(values)) from None


def _fields_at_fault(values: dict[str, Any]) -> list[str]:
    unknown = [name for name in values if name not in field_names()]
    if unknown:
        return unknown
    try:
        JobSpec.model_validate(values)
    except ValidationError as exc:
        return sorted({str(error["loc"][0]) if error["loc"] else "spec" for error in exc.errors()})
    return []


@dataclass(frozen=True)
class _Parts:
    """What the routes use: the config, the scheduler, the job views, the roots and token checks, the metrics."""

    config: ServeConfig
    scheduler: Scheduler
    views: JobViews
    roots: AllowedRoots
    check: TokenCheck
    metrics: ServiceMetrics


def create_app(config: ServeConfig) -> FastAPI:
    """The service as an ASGI application; its scheduler starts and stops with the application's lifespan."""
    metrics = ServiceMetrics()
    scheduler = Scheduler(config, [metrics.jobs])
    views = JobViews(scheduler)
    roots = AllowedRoots(config.allowed_roots)
    check = TokenCheck(config.token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        stop = threading.Event()
        triggers: list[threading.Thread] = []
        try:
            triggers = start_triggers(config.trigger_rules(), scheduler.submit, scheduler.state_dir, stop)
            yield
        finally:
            stop.set()
            for thread in triggers:
                thread.join(timeout=30)
            scheduler.stop()

    def authorized(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        header = f"Bearer {credentials.credentials}" if credentials else None
        cookie = request.cookies.get(COOKIE) if request.method in ("GET", "HEAD") else None
        if not check.allows(header, cookie):
            raise HTTPException(401, "missing or wrong token: send `Authorization: Bearer $SQUALL_TOKEN`",
                                headers={"WWW-Authenticate": "Bearer"})

    # The schema is served below, behind the token; no /docs (Swagger UI would load scripts from a CDN).
    app = FastAPI(title="squall", summary="Batch prediction the serverless way", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.config = config
    if config.token is None:
        app.add_middleware(LoopbackHostsOnly)
    _errors(app)
    parts = _Parts(config, scheduler, views, roots, check, metrics)
    guarded = [Depends(authorized)]
    _service_routes(app, parts, guarded)
    _job_routes(app, parts, guarded)
    _job_control_routes(app, parts, guarded)
    _report_routes(app, parts, guarded)
    return app


def _service_routes(app: FastAPI, parts: _Parts, guarded: list[Any]) -> None:
    """``/healthz``, the dashboard, the schema and ``/metrics``."""
    config, scheduler, check, metrics = parts.config, parts.scheduler, parts.check, parts.metrics

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness: always 200 while the service runs; no token needed."""
        return {"ok": True}

    @app.get("/", response_class=HTMLResponse, tags=["dashboard"], include_in_schema=False)
    def dashboard(request: Request, token: str | None = None) -> Response:
        """The dashboard page; ``?token=T`` sets the cookie its requests carry."""
        if token is not None and check.allows(f"Bearer {token}"):
            redirect = RedirectResponse("/", status_code=303)
            redirect.set_cookie(COOKIE, check.session_value(), httponly=True, samesite="strict")
            return redirect
        if not check.allows(request.headers.get("authorization"), request.cookies.get(COOKIE)):
            return HTMLResponse("<p>This squall service needs its token: open <code>/?token=YOUR_TOKEN</code>.</p>", 401)
        return HTMLResponse(page())

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> JSONResponse:
        """The OpenAPI schema of these routes."""
        return JSONResponse(_schema(app))

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guarded, tags=["service"])
    def prometheus() -> str:
        """Prometheus metrics (text format): every job's, summed, and the service's gauges."""
        with JobStore(scheduler.state_dir) as store:
            return metrics.text(scheduler, store, config.max_concurrency)


def _job_routes(app: FastAPI, parts: _Parts, guarded: list[Any]) -> None:
    """Submitting jobs and reading their state, chunks and dead letters."""
    config, scheduler, views, roots = parts.config, parts.scheduler, parts.views, parts.roots

    # The body is validated by parse_spec (the CLI's messages), but documented as the JobSpec it is.
    spec_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": JobSpec.model_json_schema()}}}}

    @app.post("/jobs", status_code=201, dependencies=guarded, tags=["jobs"], openapi_extra=spec_body)
    def submit(
        spec: dict[str, Any] = Body(..., description="A JobSpec: the TOML spec's field names, as JSON."),
        priority: int = Query(0, ge=-1000, le=1000, description="Higher runs first; equal priorities run in order."),
    ) -> dict[str, Any]:
        """Queue a job; answers 201 with its ``id``."""
        job = parse_spec(spec)
        roots.check_spec(job)
        job_id = scheduler.submit(job, priority=priority, source="api")
        return {"id": job_id, "state": SubmissionState.QUEUED}

    @app.get("/jobs", dependencies=guarded, tags=["jobs"])
    def list_jobs(
        state: str | None = Query(None, max_length=20, description="Only jobs in this state (QUEUED, RUNNING, …)."),
        limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
    ) -> dict[str, Any]:
        """Jobs newest first, one page at a time, and how full the worker pool is."""
        pool = {"busy_workers": scheduler.busy_workers(), "max_concurrency": config.max_concurrency,
                "running_jobs": len(scheduler.running()), "max_running_jobs": config.max_running_jobs,
                "queued": len(scheduler.queue.queued()), "warm": scheduler.pool.status()}
        return {**views.jobs(state, limit, offset), "pool": pool}

    @app.get("/jobs/{job_id}", dependencies=guarded, tags=["jobs"])
    def job(job_id: str) -> dict[str, Any]:
        """A job's state, chunk counts, rows, rows/s, ETA and queue position."""
        return views.job(_checked(job_id))

    @app.get("/jobs/{job_id}/chunks", dependencies=guarded, tags=["jobs"])
    def chunks(job_id: str) -> list[dict[str, Any]]:
        """Every chunk of the job with its state."""
        return views.chunks(_checked(job_id))

    @app.get("/jobs/{job_id}/dlq", dependencies=guarded, tags=["jobs"])
    def dlq(job_id: str) -> list[dict[str, Any]]:
        """Dead-lettered chunks with every attempt's outcome, reason and timings."""
        views.require(_checked(job_id))
        return [asdict(dead) for dead in api.dead_letters(job_id, scheduler.state_dir)]


def _job_control_routes(app: FastAPI, parts: _Parts, guarded: list[Any]) -> None:
    """Cancel, redrive and resume."""
    scheduler, views = parts.scheduler, parts.views

    @app.post("/jobs/{job_id}/cancel", status_code=202, dependencies=guarded, tags=["jobs"])
    def cancel(job_id: str) -> dict[str, Any]:
        """Cancel a queued job, or ask a running one to stop (committed parts are kept)."""
        views.job(_checked(job_id))
        return {"id": job_id, "was": scheduler.cancel(job_id)}

    @app.post("/jobs/{job_id}/redrive", status_code=202, dependencies=guarded, tags=["jobs"])
    def redrive(job_id: str, priority: int = Query(0, ge=-1000, le=1000)) -> dict[str, Any]:
        """Queue the job's dead chunks to run again."""
        views.require(_checked(job_id))
        scheduler.request(job_id, "redrive", priority)
        return {"id": job_id, "state": SubmissionState.QUEUED}

    @app.post("/jobs/{job_id}/resume", status_code=202, dependencies=guarded, tags=["jobs"])
    def resume(job_id: str, priority: int = Query(0, ge=-1000, le=1000)) -> dict[str, Any]:
        """Queue a stopped (cancelled, failed, interrupted) job to finish."""
        views.require(_checked(job_id))
        scheduler.request(job_id, "resume", priority)
        return {"id": job_id, "state": SubmissionState.QUEUED}


def _report_routes(app: FastAPI, parts: _Parts, guarded: list[Any]) -> None:
    """The job report and its timeline."""
    scheduler, views = parts.scheduler, parts.views

    @app.get("/jobs/{job_id}/report", dependencies=guarded, tags=["jobs"], response_model=None)
    def report(job_id: str, format: Literal["json", "html"] = "json") -> dict[str, Any] | HTMLResponse:
        """The job report: summary, invocations, throughput, durations, failures, dead letters and cost."""
        views.require(_checked(job_id))
        found = api.report(job_id, scheduler.state_dir)
        if format == "html":
            from squall.observe.report_html import render

            return HTMLResponse(render(found))
        return found.to_dict()

    @app.get("/jobs/{job_id}/timeline", dependencies=guarded, tags=["jobs"], response_class=Response)
    def timeline(job_id: str) -> Response:
        """The chunk timeline (workers × time, one bar per invocation coloured by outcome) as SVG."""
        from squall.observe.report_html import timeline_svg

        views.require(_checked(job_id))
        return Response(timeline_svg(api.report(job_id, scheduler.state_dir)), media_type="image/svg+xml")


def _schema(app: FastAPI) -> dict[str, Any]:
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    return app.openapi_schema


def _checked(job_id: str) -> str:
    if not re.match(_JOB_ID, job_id):
        raise JobNotFoundError(f"no job {job_id!r}: job ids are letters, digits, `_`, `.` and `-`")
    return job_id


def _answer_with(status: int) -> Callable[[Request, Exception], JSONResponse]:
    """An exception handler that answers ``status`` with the error's message."""

    def answer(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status)

    return answer


def _errors(app: FastAPI) -> None:
    """Map squall's errors to HTTP statuses; the message says what to do, as on the command line."""

    @app.exception_handler(SpecRejected)
    def rejected(request: Request, exc: SpecRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "fields": exc.fields}, 422)

    for error, status in ((PathNotAllowed, 403), (JobNotFoundError, 404), (JobStateError, 409), (UsageError, 400)):
        app.add_exception_handler(error, _answer_with(status))
