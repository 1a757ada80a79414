#!/usr/bin/env python3
"""The benchmark's ceiling: a bare FastAPI/uvicorn admission endpoint.

It parses the AdmissionReview with `orjson.loads` (the parser `serve` uses) and answers `allowed` with the request's uid and no
patch: nothing that does the webhook's job on this stack can be faster. To keep the comparison fair
it runs exactly like `skill-webhook serve` does (app/service/http/server.py): one worker, uvicorn's `auto`
HTTP parser and event loop (httptools, uvloop), no access log, no lifespan, no server/date headers,
the same keep-alive timeout and backlog, and HTTPS with the same certificate files, TLS 1.2 or newer
and ALPN http/1.1.

    python scripts/ceiling_app.py --port 9443 --cert certs/tls.crt --key certs/tls.key
"""

from __future__ import annotations

import argparse
import orjson
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def _allowed(body: bytes) -> Response:
    review = orjson.loads(body)
    answer = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": True},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


# Both paths, so the /mutate and /validate loads of the benchmark each have their ceiling.
@app.post("/mutate")
async def mutate(request: Request) -> Response:
    return _allowed(await request.body())


@app.post("/validate")
async def validate(request: Request) -> Response:
    return _allowed(await request.body())


def tls_context_factory(cert: str, key: str) -> Callable[[Any, Any], ssl.SSLContext]:
    """The same protocol settings as app/service/http/tls.py's server context."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert, key)
    return lambda config, default_factory: context


def main() -> int:
    parser = argparse.ArgumentParser(description="bare FastAPI admission endpoint (benchmark ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--cert", required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", required=True, help="serving key (PEM)")
    args = parser.parse_args()
    uvicorn.run(
        app, host=args.host, port=args.port, ssl_context_factory=tls_context_factory(args.cert, args.key),
        http="auto", loop="auto", workers=1, log_config=None, access_log=False, lifespan="off",
        server_header=False, date_header=False, backlog=2048, timeout_keep_alive=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
