#!/usr/bin/env python3
"""A trivial HTTPS endpoint that shows the load generator's own ceiling.

No framework: an asyncio protocol on uvloop, httptools to find where each request ends, and one
fixed answer written per request, over the same TLS as the webhook. Whatever rate the load
generator reaches against this is far above what any FastAPI app can answer, so when the benchmark
reports e.g. "generator ceiling 20,000 req/s" next to "ceiling app 2,800 req/s", the numbers of the
other rows are the servers' limits, not the generator's.

    python scripts/loadgen_ceiling.py --port 9447 --cert tls.crt --key tls.key
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

import httptools
import uvloop

BODY = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class FixedAnswer(asyncio.Protocol):
    """Answers every complete request on the connection with ANSWER; keeps the connection open."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(ANSWER)  # type: ignore[attr-defined]


async def serve(host: str, port: int, context: ssl.SSLContext) -> None:
    server = await asyncio.get_running_loop().create_server(FixedAnswer, host, port, ssl=context, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description="fixed-answer HTTPS endpoint (load generator ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9447)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(args.cert, args.key)
    uvloop.run(serve(args.host, args.port, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
