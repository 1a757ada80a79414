"""Fuzzing harness for /mutate and /validate (docs/configuration.md "Service surface",
docs/testing.md "Hostile input and fuzzing"), shared by tests/test_fuzz.py and scripts/fuzz.

Inputs come from tests/fuzz_inputs.py, drawn from one seeded `random.Random`, so any failure is
reproduced by (seed, position). They go through the real ASGI app, whole or chunked.

Each answer is judged against an independent reading of the input (`json.loads`, PyYAML's
CBaseLoader), never against the app's own parsing: a well-formed AdmissionReview with the request's
uid (and, when it carries a patch, a patch that applies to request.object and leaves nothing to do
on reinvocation), a dry-run report, or a 400/413 JSON error, and 413 exactly when the body is over
the cap. A 5xx, an exception out of the app, an AdmissionReview denial with code 500 (a bug caught
by the app's safety net) or an answer slower than SLOW_SECONDS is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import jsonpatch
import yaml

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.service.http.app import ServiceState, create_app
from app.service.logs import ADMISSION_LOGGER
from tests.fuzz_inputs import FUZZ_RUNTIMES, MAX_BODY, SAMPLES, FuzzInput, generate_inputs

FUZZ_INPUTS_ENV = "SKILL_WEBHOOK_FUZZ_INPUTS"
FUZZ_SEED_ENV = "SKILL_WEBHOOK_FUZZ_SEED"
DEFAULT_SEED = 20260101
# Far above any honest answer (a 3 MiB body takes tens of ms); catches pathological parsing.
SLOW_SECONDS = 2.0
# libyaml's scanner, as the app uses: the pure-Python one refuses tabs that YAML allows in plain scalars.
_BASE_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
REVIEW_RESPONSE_KEYS = {"uid", "allowed", "patchType", "patch", "status", "warnings"}


class Violation(AssertionError):
    """An answer outside what the service surface allows (docs/configuration.md "Service surface")."""


# -- the service under test --------------------------------------------------------------------------


def fuzz_state(*, synced: bool = True) -> ServiceState:
    """The samples' AgentRuntimes plus FUZZ_RUNTIMES, in one index."""
    documents = list(yaml.safe_load_all((SAMPLES / "agentruntimes.yaml").read_text())) + FUZZ_RUNTIMES
    index = AgentRuntimeIndex()
    index.replace_all(AgentRuntime.from_object(d) for d in documents)
    if synced:
        index.synced.set()
    return ServiceState(index=index)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    seconds: float


class AsgiClient:
    """POSTs to an ASGI app as uvicorn would hand it a request, without sockets or an HTTP client:
    one scope, the body in one or several `http.request` messages (several, and no Content-Length,
    for a chunked upload). The cheapest way through the app's real code path, for volume."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def post(self, path: str, body: bytes, content_type: str | None = None, chunk_size: int | None = None) -> Answer:
        started = time.perf_counter()
        status, headers, payload = self.loop.run_until_complete(self._post(path, body, content_type, chunk_size))
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        return Answer(status, payload, content_type, time.perf_counter() - started)

    async def _post(
        self, path: str, body: bytes, content_type: str | None, chunk_size: int | None
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        headers = [(b"host", b"skill-webhook.test")]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode("latin-1")))
        if chunk_size:
            headers.append((b"transfer-encoding", b"chunked"))
            chunks = [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)] or [b""]
        else:
            headers.append((b"content-length", str(len(body)).encode()))
            chunks = [body]
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        messages.reverse()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8443),
        }
        sent: dict[str, Any] = {"status": 0, "headers": {}, "body": []}

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["headers"] = dict(message.get("headers", []))
            elif message["type"] == "http.response.body":
                sent["body"].append(message.get("body", b""))

        await self.app(scope, receive, send)
        return sent["status"], sent["headers"], b"".join(sent["body"])


class HttpxAppClient:
    """Synchronous httpx over `httpx.ASGITransport`, for tests: one event loop for all requests."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://skill-webhook.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def answer_of(response: httpx.Response, seconds: float = 0.0) -> Answer:
    return Answer(response.status_code, response.content, response.headers.get("content-type", ""), seconds)


# -- judging an answer -------------------------------------------------------------------------------


def check_answer(inp: FuzzInput, answer: Answer, reinvoke: Callable[[dict], Answer] | None = None) -> str:
    """The answer's class (e.g. "review/allowed/patch", "report/denied", "error/400"); raises
    Violation when the answer is not one the service surface allows for this input."""
    if answer.status >= 500:
        raise Violation(f"HTTP {answer.status}: {answer.body[:300]!r}")
    if answer.seconds > SLOW_SECONDS:
        raise Violation(f"answered in {answer.seconds:.2f} s")
    if not answer.content_type.startswith("application/json"):
        raise Violation(f"content-type {answer.content_type!r}")
    try:
        body = json.loads(answer.body)
    except ValueError as err:
        raise Violation(f"answer is not JSON ({err}): {answer.body[:300]!r}") from None
    if not isinstance(body, dict):
        raise Violation(f"answer is not a JSON object: {body!r:.300}")
    oversized = len(inp.body) > MAX_BODY
    if oversized != (answer.status == 413):
        raise Violation(f"{len(inp.body)}-byte body answered {answer.status}")
    if answer.status in (400, 413):
        if not (isinstance(body.get("error"), str) and body["error"] and body.get("code") == answer.status):
            raise Violation(f"error body {body!r:.300}")
        if not set(body) <= {"error", "code", "detail"}:
            raise Violation(f"unexpected keys in error body {sorted(body)}")
        if answer.status == 400 and inp.endpoint == "/mutate" and _valid_envelope(strict_json_or_none(inp.body)):
            raise Violation(f"a valid AdmissionReview was refused: {body['error']}")
        return f"error/{answer.status}"
    if answer.status != 200:
        raise Violation(f"HTTP {answer.status}: {body!r:.300}")
    if body.get("kind") == "AdmissionReview":
        return _check_review(inp, body, reinvoke)
    if inp.endpoint == "/validate":
        return _check_report(body)
    raise Violation(f"/mutate answered 200 without an AdmissionReview: {body!r:.300}")


def _check_review(inp: FuzzInput, body: dict, reinvoke: Callable[[dict], Answer] | None) -> str:
    if body.get("apiVersion") != "admission.k8s.io/v1" or set(body) != {"apiVersion", "kind", "response"}:
        raise Violation(f"envelope {body!r:.300}")
    response = body["response"]
    if not isinstance(response, dict) or not set(response) <= REVIEW_RESPONSE_KEYS:
        raise Violation(f"response {response!r:.300}")
    sent = _sent_review(inp)
    if not _valid_envelope(sent):
        raise Violation("answered an AdmissionReview to a body that is not one")
    if response.get("uid") != sent["request"]["uid"]:
        raise Violation(f"uid {response.get('uid')!r} != {sent['request']['uid']!r}")
    allowed = response.get("allowed")
    if not isinstance(allowed, bool):
        raise Violation(f"allowed is {allowed!r}")
    warnings = response.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) and w for w in warnings):
        raise Violation(f"warnings {warnings!r:.300}")
    status = response.get("status")
    if status is not None:
        if not isinstance(status, dict) or not isinstance(status.get("code"), int):
            raise Violation(f"status {status!r:.300}")
        if status["code"] >= 500 and status["code"] != 503:
            raise Violation(f"internal error caught by the safety net: {status!r:.300}")
    if not allowed:
        if status is None or not isinstance(status.get("message"), str) or not status["message"]:
            raise Violation(f"denial without a code and message: {response!r:.300}")
        if "patch" in response:
            raise Violation("a denial carries a patch")
        return f"review/denied/{status['code']}"
    if "patch" not in response:
        if "patchType" in response:
            raise Violation("patchType without a patch")
        return "review/allowed"
    if inp.endpoint != "/mutate" or response.get("patchType") != "JSONPatch":
        raise Violation(f"patch from {inp.endpoint} with patchType {response.get('patchType')!r}")
    patched = _apply_patch(sent["request"].get("object"), response["patch"])
    if reinvoke is not None:
        again = reinvoke(patched)
        second = json.loads(again.body) if again.status == 200 else None
        if not (isinstance(second, dict) and second.get("response", {}).get("allowed") is True
                and "patch" not in second["response"]):
            raise Violation(f"reinvocation on the patched pod is not a no-op: HTTP {again.status} {again.body[:500]!r}")
    return "review/allowed/patch"


def _apply_patch(obj: Any, encoded: Any) -> Any:
    try:
        operations = json.loads(base64.b64decode(encoded, validate=True))
    except (TypeError, ValueError, binascii.Error) as err:
        raise Violation(f"patch is not base64 JSON: {err}") from None
    if not isinstance(operations, list) or not operations:
        raise Violation(f"patch is not a non-empty list of operations: {operations!r:.300}")
    try:
        return jsonpatch.apply_patch(obj, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError) as err:
        raise Violation(f"patch does not apply to request.object: {err}; patch {operations!r:.500}") from None


def _check_report(body: dict) -> str:
    if set(body) != {"allowed", "errors", "warnings"}:
        raise Violation(f"report keys {sorted(body)}")
    errors, warnings = body["errors"], body["warnings"]
    for name, items in (("errors", errors), ("warnings", warnings)):
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise Violation(f"report {name} {items!r:.300}")
    if body["allowed"] is not (not errors):
        raise Violation(f"report allowed={body['allowed']!r} with {len(errors)} errors")
    return "report/allowed" if body["allowed"] else "report/denied"


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def strict_json_or_none(data: bytes) -> Any:
    """The body read as I-JSON (RFC 7493), what the API server sends and /mutate promises to take:
    UTF-8, no lone surrogates, no NaN/Infinity, numbers within double range, integers within 64 bits. Anything else may get a 400."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse, parse_int=_int64, parse_float=_finite)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate escape
        return value
    except (ValueError, RecursionError, UnicodeError):
        return None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: beyond IEEE double, which I-JSON does not allow
        raise ValueError("number beyond double precision")
    return value


def _int64(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError("integer beyond 64 bits")
    return value


def _sent_review(inp: FuzzInput) -> Any:
    """The AdmissionReview the body holds, read independently of app.core.parsing.documents."""
    value = _json_or_none(inp.body)
    if value is not None or inp.endpoint == "/mutate":
        return value
    try:
        documents = [d for d in yaml.load_all(inp.body.decode("utf-8"), Loader=_BASE_LOADER) if d is not None]
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    return documents[0] if len(documents) == 1 else None


def _valid_envelope(review: Any) -> bool:
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        return False
    request = review.get("request")
    return (review.get("apiVersion") == "admission.k8s.io/v1" and isinstance(request, dict)
            and isinstance(request.get("uid"), str) and bool(request["uid"]))


# -- running -----------------------------------------------------------------------------------------


@dataclass
class Failure:
    position: int
    input: FuzzInput
    problem: str

    def __str__(self) -> str:
        return (f"#{self.position} {self.input.family} POST {self.input.endpoint} "
                f"content-type={self.input.content_type!r} chunked={self.input.chunk_size} "
                f"{len(self.input.body)} bytes {self.input.body[:400]!r}: {self.problem}")


@dataclass
class FuzzReport:
    seed: int
    count: int = 0
    classes: Counter = field(default_factory=Counter)
    families: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    elapsed: float = 0.0
    slowest: float = 0.0

    def summary(self) -> str:
        lines = [f"seed {self.seed}: {self.count} inputs in {self.elapsed:.1f} s "
                 f"({self.count / max(self.elapsed, 1e-9):.0f}/s), slowest answer {self.slowest * 1000:.1f} ms, "
                 f"{self.failure_count} failures"]
        lines.append("answers by class:")
        lines += [f"  {name:<24} {n:>8}" for name, n in sorted(self.classes.items())]
        lines.append("inputs by family:")
        lines += [f"  {name:<24} {n:>8}" for name, n in sorted(self.families.items())]
        lines += [f"FAIL {f}" for f in self.failures]
        return "\n".join(lines)


def run_fuzz(
    count: int, seed: int = DEFAULT_SEED, *, max_failures: int = 20, progress: Callable[[int], None] | None = None
) -> FuzzReport:
    """Send `count` generated inputs through the app; never raises for a bad answer, reports it."""
    client = AsgiClient(create_app(fuzz_state()))
    report = FuzzReport(seed=seed)
    started = time.perf_counter()
    # A decision that raises is logged with its traceback by the app, and reported here anyway.
    admission_log = logging.getLogger(ADMISSION_LOGGER)
    was_disabled, admission_log.disabled = admission_log.disabled, True
    try:
        for position, inp in enumerate(generate_inputs(random.Random(seed), count)):
            report.count += 1
            report.families[inp.family] += 1
            try:
                answer = client.post(inp.endpoint, inp.body, inp.content_type, inp.chunk_size)
                report.slowest = max(report.slowest, answer.seconds)
                report.classes[check_answer(inp, answer, _reinvoker(client, inp))] += 1
            except Exception as err:  # a Violation, or an exception out of the app (a crash)
                report.classes["FAILURE"] += 1
                report.failure_count += 1
                if len(report.failures) < max_failures:
                    problem = str(err) if isinstance(err, Violation) else f"crash: {type(err).__name__}: {err}"
                    report.failures.append(Failure(position, inp, problem))
            if progress is not None and report.count % 10_000 == 0:
                progress(report.count)
    finally:
        admission_log.disabled = was_disabled
        client.close()
        report.elapsed = time.perf_counter() - started
    return report


def _reinvoker(client: AsgiClient, inp: FuzzInput) -> Callable[[Any], Answer]:
    """Sends the same review again with the patched object, as the API server's reinvocation does."""

    def reinvoke(patched: Any) -> Answer:
        review = copy.deepcopy(json.loads(inp.body))
        review["request"]["object"] = patched
        return client.post("/mutate", json.dumps(review).encode(), "application/json")

    return reinvoke
