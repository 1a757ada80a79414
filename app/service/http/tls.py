"""The HTTPS server context: TLS 1.2+, ALPN http/1.1, certificate files reloaded when they change.

Why a base context plus inner contexts: uvicorn (asyncio's create_server) holds one SSLContext for
the life of the listener, and calling load_cert_chain on a context in use is not safe (a cert/key
mismatch half-way leaves it broken). So the listener gets a base context whose SNI callback, which
OpenSSL runs on every ClientHello (with or without a server name), points the new connection at the
current inner context. A reload builds a fresh inner context and swaps one reference: handshakes in
progress and established connections keep the context they started with, so nothing in flight fails.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Any, Callable

from app.service.install.certs import load_cert
from app.sources.files.changes import FileStamp

log = logging.getLogger(__name__)

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# The webhook speaks HTTP/1.1 only; offering h2 would make clients pick a protocol we do not serve.
ALPN_PROTOCOLS = ("http/1.1",)
DEFAULT_POLL_INTERVAL = 1.0
LOAD_ATTEMPTS = 3


# What a plain-HTTP request to the HTTPS port is answered, instead of an empty reply (the documented
# JSON error shape of the webhook's endpoints).
PLAIN_HTTP_BODY = b'{"error":"this port speaks HTTPS only: use https://","code":400}'
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(PLAIN_HTTP_BODY), PLAIN_HTTP_BODY)
)


class _Handshake(ssl.SSLObject):
    """The TLS state of one connection of the listener. OpenSSL recognises an HTTP request where a
    ClientHello should be; instead of dropping the connection without a word, the answer above is
    written where the handshake's own bytes go, and the handshake then waits for input that will never
    be TLS: the client reads the 400 and closes (or the handshake timeout does)."""

    outgoing: ssl.MemoryBIO | None = None
    answered = False

    def do_handshake(self) -> None:
        if self.answered:
            raise ssl.SSLWantReadError("plain HTTP request answered")
        try:
            super().do_handshake()
        except ssl.SSLError as err:
            if err.reason != "HTTP_REQUEST" or self.outgoing is None:
                raise
            self.outgoing.write(PLAIN_HTTP_ANSWER)
            self.answered = True
            # "Want read": the event loop's TLS protocol then sends what was written, as it sends a
            # handshake message, and keeps the connection open for the client to read it.
            raise ssl.SSLWantReadError("plain HTTP request answered") from None


class ListenerContext(ssl.SSLContext):
    """The listener's context: makes `_Handshake` objects (SSLContext.sslobject_class) that know where
    their outgoing bytes go."""

    sslobject_class = _Handshake

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        handshake = super().wrap_bio(incoming, outgoing, *args, **kwargs)
        if isinstance(handshake, _Handshake):
            handshake.outgoing = outgoing
        return handshake


def new_server_context(kind: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    ctx = kind(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_TLS_VERSION
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    # Client-initiated renegotiation is a cheap way to make a server burn CPU; nothing needs it.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


class ReloadingTLSContext:
    """A server SSLContext that follows `cert_file`/`key_file`.

    A daemon thread polls the files every `poll_interval` seconds (start()/stop(), or use it as a
    context manager). A changed pair is loaded into a fresh context and used for new handshakes only
    when it loads cleanly (cert parses, key parses, key matches cert); a broken or half-written pair
    keeps the previous one, is logged, and is retried when the files change again.

    `loaded` and `not_after` are for readiness and the certificate-expiry metric; `on_reload(self)`
    runs after every successful load, including the first.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_reload: Callable[["ReloadingTLSContext"], None] | None = None,
        require_initial: bool = True,
    ) -> None:
        """With `require_initial` (the default) an unusable pair at start raises ssl.SSLError or
        OSError, a clear startup error; without it the server starts unready, refuses handshakes,
        and picks the pair up once it appears (e.g. a Secret that cert-manager has yet to issue)."""
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.poll_interval = poll_interval
        self.on_reload = on_reload
        self.not_after: dt.datetime | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._current: ssl.SSLContext | None = None
        self._state: tuple[FileStamp | None, FileStamp | None] | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self.ssl_context = new_server_context(ListenerContext)
        self.ssl_context.sni_callback = self._select_current_context

        # A pair that must load at start is reported once, by the caller that stops on the error.
        self._quiet = require_initial
        error = self._try_reload()
        self._quiet = False
        if error is not None and require_initial:
            raise error

    @property
    def loaded(self) -> bool:
        return self._current is not None

    # -- uvicorn -----------------------------------------------------------------------------------

    def uvicorn_factory(self, config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """For `uvicorn.Config(ssl_context_factory=...)`; uvicorn's own file options stay unused."""
        return self.ssl_context

    # -- watching ----------------------------------------------------------------------------------

    def start(self) -> "ReloadingTLSContext":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="tls-cert-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.poll_interval))
            self._thread = None

    def __enter__(self) -> "ReloadingTLSContext":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload_if_changed()
            except Exception:  # the watcher must outlive any surprise; the old pair keeps serving
                log.exception("tls: unexpected error while checking certificate files")

    def reload_if_changed(self) -> bool:
        """Load the pair if the files changed since the last attempt; True when a new pair is live."""
        if self._file_states() == self._state:
            return False
        return self._try_reload() is None

    # -- internals ---------------------------------------------------------------------------------

    def _file_states(self) -> tuple[FileStamp | None, FileStamp | None]:
        return FileStamp.of(self.cert_file), FileStamp.of(self.key_file)

    def _try_reload(self) -> Exception | None:
        with self._reload_lock:
            for _ in range(LOAD_ATTEMPTS):
                before = self._file_states()
                try:
                    ctx = new_server_context()
                    ctx.load_cert_chain(self.cert_file, self.key_file)
                    not_after = load_cert(self.cert_file).not_valid_after_utc
                except (OSError, ValueError, ssl.SSLError) as exc:
                    return self._record_failure(before, exc)
                # A writer busy while we read may leave us with old and new bytes mixed (the key check
                # catches a mismatched pair, not a stale notAfter): read again.
                if self._file_states() == before:
                    break
            else:
                # Leave the state unrecorded so the next poll tries again.
                return OSError("certificate files kept changing while being loaded")
            self._current = ctx
            self._state = before
            self.not_after = not_after
            self.last_error = None
            self.reloads += 1
        log.info("tls: serving certificate %s loaded, valid until %s", self.cert_file, not_after.isoformat())
        if self.on_reload is not None:
            try:
                self.on_reload(self)
            except Exception:
                log.exception("tls: on_reload callback failed")
        return None

    def _record_failure(self, state: tuple[FileStamp | None, FileStamp | None], exc: Exception) -> Exception:
        # Remember the failed state so an unchanged broken pair is logged once, not at every poll.
        self._state = state
        self.reload_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._quiet:
            return exc
        log.error(
            "tls: could not load %s / %s, %s: %s",
            self.cert_file,
            self.key_file,
            "keeping the previous certificate" if self.loaded else "no certificate is loaded",
            self.last_error,
        )
        return exc

    def _select_current_context(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, base: ssl.SSLContext
    ) -> int | None:
        current = self._current
        if current is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        ssl_object.context = current
        return None
