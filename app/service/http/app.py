"""The FastAPI apps: the HTTPS webhook (/mutate, /validate) and the plain-HTTP health/metrics listener.

Both admission endpoints share one envelope path (`_admission`): read the body under a size cap and
a deadline, decode, decide with a pure core function, log one line, count, respond. Nothing here may
answer 500: a body we cannot read is a 400/408/413 with a JSON error, and an unexpected failure inside
a decision is a denial with the reason logged, so the API server always gets a well-formed
AdmissionReview.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.admission import (
    AdmissionDecision,
    AdmissionRequest,
    BadAdmissionReview,
    admission_response,
    parse_admission_review,
)
from app.core.parsing.documents import DocumentError, load_documents
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.review import MutationOptions, review_pod
from app.core.validation.agentruntime import ValidationOptions, review_agentruntime
from app.core.validation.batch import validate_documents

from app.service.http.deadlines import BodyDeadlines
from app.service.logs import ADMISSION_LOG, ADMISSION_LOGGER
from app.service.metrics import WebhookMetrics

MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server's own limit on a request body
# A body must have arrived this long after its headers: the API server gives up on a webhook after at
# most 30 s, so a slower body is a trickling client holding a connection, not an admission.
BODY_TIMEOUT_SECONDS = 10.0
JSON_TYPE = "application/json"

log = logging.getLogger(ADMISSION_LOGGER)
Decide = Callable[[AdmissionRequest], AdmissionDecision]


@dataclass
class ServiceState:
    """Everything the request handlers read; built once by `serve` (or a test)."""

    index: AgentRuntimeIndex
    mutation: MutationOptions = field(default_factory=MutationOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    metrics: WebhookMetrics = field(default_factory=WebhookMetrics)
    # Readiness also needs the serving certificate; tests on the bare ASGI app have none to wait for.
    certificate_loaded: Callable[[], bool] = lambda: True
    body_timeout: float = BODY_TIMEOUT_SECONDS
    body_deadlines: BodyDeadlines | None = None


def create_app(state: ServiceState) -> FastAPI:
    """The HTTPS webhook: POST /mutate and POST /validate."""
    app = FastAPI(title="skill-webhook", docs_url=None, redoc_url=None, openapi_url=None)

    async def mutate(request: Request) -> Response:
        return await _admission(request, state, "mutate", lambda r: review_pod(r, state.index, state.mutation))

    async def validate(request: Request) -> Response:
        started = time.perf_counter()
        body = await _read_body(request, state, "validate")
        if isinstance(body, Response):
            return body
        review = _api_server_review(body)
        if review is None:
            # A person's dry run (a bare AgentRuntime, JSON or YAML), read by the strict loader.
            try:
                documents = load_documents(body, request.headers.get("content-type"))
            except DocumentError as err:
                return _bad_request(state, "validate", f"body is not valid JSON or YAML: {err}", err.as_dict())
            if len(documents) != 1 or not _is_review(documents[0]):
                return _dry_run_report(documents, state)
            review = documents[0]  # an AdmissionReview written by hand, in YAML
        return _answer_review(
            review, state, "validate", lambda r: review_agentruntime(r, state.index, state.validation), started
        )

    # Plain Starlette routes on the FastAPI app: the handlers take the request and build their own
    # response, so FastAPI's per-request dependency solving and response validation would be pure cost
    # on the path of every pod creation.
    app.add_route("/mutate", mutate, methods=["POST"])
    app.add_route("/validate", validate, methods=["POST"])
    _documented_errors(app)

    return app


def create_health_app(state: ServiceState) -> FastAPI:
    """The plain-HTTP listener: /healthz, /readyz, /metrics."""
    app = FastAPI(title="skill-webhook health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get("/readyz")
    async def readyz() -> Response:
        synced, certificate = state.index.synced.is_set(), state.certificate_loaded()
        body = {"ready": synced and certificate, "cacheSynced": synced, "certificateLoaded": certificate,
                "agentRuntimes": len(state.index)}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        state.metrics.cache_synced.set(1 if state.index.synced.is_set() else 0)
        state.metrics.agentruntimes_cached.set(len(state.index))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _documented_errors(app)
    return app


def _documented_errors(app: FastAPI) -> None:
    """FastAPI's own answers (an unknown path, a wrong method) in the documented `{"error", "code"}`
    shape rather than its `{"detail": ...}`."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return JSONResponse({"error": message, "code": exc.status_code}, status_code=exc.status_code,
                            headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}", "code": 422}, status_code=422)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


async def _admission(request: Request, state: ServiceState, endpoint: str, decide: Decide) -> Response:
    started = time.perf_counter()
    body = await _read_body(request, state, endpoint)
    if isinstance(body, Response):
        return body
    try:
        # orjson: UTF-8 only (as the API server sends), nesting capped at 1024, no NaN, 64-bit integers.
        review = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        return _bad_request(state, endpoint, f"body is not JSON: {err}")
    return _answer_review(review, state, endpoint, decide, started)


def _api_server_review(body: bytes) -> dict[str, Any] | None:
    """The body as orjson reads what the API server sends, when it is an AdmissionReview."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if _is_review(value) else None


def _is_review(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "AdmissionReview"


def _answer_review(review: Any, state: ServiceState, endpoint: str, decide: Decide, started: float) -> Response:
    try:
        request = parse_admission_review(review)
    except BadAdmissionReview as err:
        return _bad_request(state, endpoint, f"not an admission.k8s.io/v1 AdmissionReview: {err}")
    try:
        decision = decide(request)
    except Exception:  # a bug must not turn into a 500 and a half-applied pod: deny and say why
        log.exception("decision failed", extra={"fields": {"uid": request.uid, "endpoint": endpoint}})
        decision = AdmissionDecision.deny(500, "internal error in skill-webhook; see its logs", outcome="error")
    if endpoint == "mutate":
        if decision.outcome == "injected":
            state.metrics.observe_injection(len(decision.skills), decision.extracted)
        elif decision.outcome == "image-volumes-off":
            state.metrics.image_volumes_unsupported.inc()
        if decision.unpinned:
            state.metrics.unpinned_pods.inc()
    payload = orjson.dumps(admission_response(request.uid, decision))
    elapsed = time.perf_counter() - started
    state.metrics.observe_admission(endpoint, decision.outcome, elapsed)
    _log_admission(endpoint, request, decision, elapsed)
    return Response(payload, media_type=JSON_TYPE)


def _dry_run_report(documents: list[Any], state: ServiceState) -> Response:
    """curl dry run with bare AgentRuntimes: a plain report, not an AdmissionReview. The documents
    are checked together and against the cache, by the function `skill-webhook validate` uses."""
    if not documents:
        return _bad_request(state, "validate", "body holds no document")
    # One document: lines as they are. Several (or a list): each line starts with where it is from.
    labels = [""] if len(documents) == 1 else [f"[{i}]" for i in range(len(documents))]
    batch = validate_documents(zip(labels, documents), options=state.validation, index=state.index)
    errors: list[str] = []
    warnings: list[str] = []
    for result in batch.results:
        prefix = f"{result.label} " if result.label else ""
        if result.report is None:
            warnings.append(f"{prefix}{result.note} of {state.validation.agentruntime_api}")
            continue
        errors += [prefix + e for e in result.report.errors]
        warnings += [prefix + w for w in result.report.warnings]
    decision = "allowed" if batch.allowed else "denied"
    state.metrics.admissions.labels("validate-dry-run", decision).inc()
    return Response(orjson.dumps({"allowed": batch.allowed, "errors": errors, "warnings": warnings}), media_type=JSON_TYPE)


async def _read_body(request: Request, state: ServiceState, endpoint: str) -> bytes | Response:
    """The body; a 413 as soon as it is known to exceed the cap (never read whole); a 408 when it
    has not fully arrived `state.body_timeout` seconds after the headers."""
    deadlines = state.body_deadlines
    if deadlines is None or deadlines.timeout != state.body_timeout:
        deadlines = state.body_deadlines = BodyDeadlines(state.body_timeout)
    try:
        return await deadlines.read(_receive_body(request, state, endpoint))
    except TimeoutError:
        state.metrics.bad_requests.labels(endpoint, "408").inc()
        return JSONResponse(
            {"error": f"request body not received within {state.body_timeout:g} s of its headers", "code": 408},
            status_code=408, headers={"Connection": "close"},
        )


async def _receive_body(request: Request, state: ServiceState, endpoint: str) -> bytes | Response:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return _bad_request(state, endpoint, "Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            return _too_large(state, endpoint)
        # The server delivers exactly Content-Length bytes, so the body is known to fit.
        body = await request.body()
        return body if body else _bad_request(state, endpoint, "empty body: expected an AdmissionReview")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _too_large(state, endpoint)
        chunks.append(chunk)
    if not size:
        return _bad_request(state, endpoint, "empty body: expected an AdmissionReview")
    return b"".join(chunks)


def _bad_request(state: ServiceState, endpoint: str, message: str, detail: dict | None = None) -> Response:
    state.metrics.bad_requests.labels(endpoint, "400").inc()
    body: dict[str, Any] = {"error": message, "code": 400}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=400)


def _too_large(state: ServiceState, endpoint: str) -> Response:
    state.metrics.bad_requests.labels(endpoint, "413").inc()
    return JSONResponse(
        {"error": f"body larger than {MAX_BODY_BYTES} bytes", "code": 413}, status_code=413,
        headers={"Connection": "close"},
    )


def _log_admission(endpoint: str, request: AdmissionRequest, decision: AdmissionDecision, elapsed: float) -> None:
    if not ADMISSION_LOG.enabled:
        return
    obj = request.object if isinstance(request.object, dict) else {}
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    fields = {
        "endpoint": endpoint,
        "uid": request.uid,
        "operation": request.operation,
        "dryRun": request.dry_run,
        "kind": request.kind,
        "namespace": request.namespace,
        "name": request.name or meta.get("name") or meta.get("generateName") or "",
        "agentRuntime": decision.runtime,
        "skills": decision.skills,
        "decision": decision.outcome,
        "allowed": decision.allowed,
        "latencyMs": round(elapsed * 1000, 3),
    }
    if decision.message and not decision.allowed:
        fields["reason"] = decision.message
    if decision.warnings:
        fields["warnings"] = decision.warnings
    ADMISSION_LOG.write(fields)
