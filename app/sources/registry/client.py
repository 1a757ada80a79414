"""An OCI distribution API client: manifests and blobs, anonymous, basic or bearer-token auth.

We speak the protocol with httpx directly rather than through oras-py, the ORAS project's SDK: its
`get_manifest` validates every answer against the image-manifest schema (so an index or a Docker
manifest list fails), returns the body without the response headers (no Docker-Content-Digest or
Content-Type), sets no per-request timeout, trusts either the system CAs or nothing (no extra CA
file), and keeps auth state in headers shared by every request on the client. Four GET/HEAD
endpoints and two auth challenges are a smaller surface than working around all of that.

Credentials come from a docker `config.json` (`auths.<registry>.auth`, base64 `user:pass`, or
`username`/`password`), re-read when the file changes (a mounted Secret is updated in place), or are
given once (`StaticAuth`: the puller's mounted pull secrets).

Blobs are read whole (`get_blob`, small ones: signatures) or streamed (`open_blob`: layers, which
the puller verifies and unpacks as they arrive, never holding one in memory).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator, Mapping

import httpx

from app.core.registry_facts import MANIFEST_ACCEPT

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 4 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_DIGESTED_CACHE_MAX = 4096


@dataclass(frozen=True)
class _Answer:
    status_code: int
    headers: httpx.Headers
    content: bytes


# The kinds of RegistryError that say the registry (down, stalling, failing, refusing our credentials),
# not one reference, is in trouble: the resolver backs off from a reference that fails so; the others
# (not_found, bad_response) are retried at the usual interval.
REGISTRY_FAULTS = frozenset({"timeout", "unreachable", "server_error", "tls", "unauthorized"})


class RegistryError(Exception):
    """A failed registry request. `kind` is one of not_found, unauthorized, timeout, unreachable,
    server_error, tls, bad_response; `str()` is a short phrase such as "401 unauthorized"."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    body: bytes
    document: Mapping

    @classmethod
    def parse(cls, body: bytes, content_type: str) -> "Manifest":
        try:
            document = json.loads(body)
        except ValueError:
            raise RegistryError("bad_response", "manifest is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError("bad_response", "manifest is not a JSON object")
        media_type = document.get("mediaType") or content_type.split(";")[0].strip()
        return cls(str(media_type), "sha256:" + hashlib.sha256(body).hexdigest(), body, document)


def api_host(registry: str) -> str:
    """The host to talk to: Docker Hub's API lives on registry-1.docker.io."""
    return DOCKER_HUB_API if registry.lower() in _DOCKER_HUB_KEYS else registry


# -- credentials ----------------------------------------------------------------------------------


class DockerConfigAuth:
    """Credentials per registry from a docker config.json, re-read when its mtime or size changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._creds: dict[str, tuple[str, str]] = {}

    def credentials(self, registry: str) -> tuple[str, str] | None:
        self._reload()
        host = registry.lower()
        keys = _DOCKER_HUB_KEYS if api_host(host) == DOCKER_HUB_API else (host,)
        for key in keys:
            found = self._creds.get(_host_of(key))
            if found:
                return found
        return None

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp is not None:
                log.warning("registry auth file %s is gone; going on without its credentials", self.path)
            self._stamp, self._creds = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._creds = parse_docker_config(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            # Keep what worked: a half-written Secret update must not log every registry out.
            log.warning("registry auth file %s unreadable (%s); keeping the last good credentials", self.path, exc)


class StaticAuth(DockerConfigAuth):
    """Credentials per registry given once, not re-read (a short-lived process such as the puller)."""

    def __init__(self, credentials: Mapping[str, tuple[str, str]]) -> None:
        super().__init__(None)
        self._creds = {_host_of(key): value for key, value in credentials.items()}


def parse_docker_config(data: bytes, *, legacy: bool = False) -> dict[str, tuple[str, str]]:
    """registry host -> (username, password) from a docker config.json (with `legacy`, the old
    `.dockercfg` form: the "auths" object itself); raises ValueError."""
    document = json.loads(data)
    if legacy:
        auths = document
    else:
        auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError('no "auths" object')
    found: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"auths[{key!r}].auth is not base64 user:password") from None
        if isinstance(user, str) and isinstance(password, str) and user:
            found[_host_of(key)] = (user, password)
    return found


def _host_of(key: str) -> str:
    """`https://host/v1/` and `host` name the same registry in config.json keys."""
    text = key.lower()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    return text.split("/", 1)[0]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """("bearer"|"basic", params) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


# -- the client -----------------------------------------------------------------------------------


class RegistryClient:
    """Async client for many registries; one per resolver (or per `inspect` run).

    Each request is bounded by `timeout` seconds in total (connect, TLS, headers and body), so a
    registry that accepts and stalls costs at most that long. Manifests and blobs fetched by digest
    are kept in memory (content-addressed, so never stale; at most 4,096)."""

    def __init__(
        self,
        *,
        auth_file: Path | None = None,
        credentials: DockerConfigAuth | None = None,
        ca_file: Path | None = None,
        insecure: Iterable[str] = (),
        timeout: float = 5.0,
    ) -> None:
        self.auth = credentials if credentials is not None else DockerConfigAuth(auth_file)
        self.insecure = frozenset(r.lower() for r in insecure)
        self.timeout = timeout
        context = ssl.create_default_context()
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        self._http = httpx.AsyncClient(
            verify=context, timeout=httpx.Timeout(timeout), follow_redirects=True,
            headers={"User-Agent": "skill-webhook"},
        )
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic_hosts: set[str] = set()
        self._by_digest: dict[tuple[str, str, str], Manifest | bytes] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def base_url(self, registry: str) -> str:
        scheme = "http" if registry.lower() in self.insecure else "https"
        return f"{scheme}://{api_host(registry)}"

    async def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        """GET a manifest by tag or digest; a digest answer is checked against the bytes."""
        key = (registry, repository, reference)
        cached = self._by_digest.get(key)
        if isinstance(cached, Manifest):
            return cached
        response = await self._request(
            "GET", registry, repository, f"/v2/{repository}/manifests/{reference}",
            accept=", ".join(MANIFEST_ACCEPT), what=_manifest_what(reference), limit=MAX_MANIFEST_BYTES,
        )
        manifest = Manifest.parse(response.content, response.headers.get("content-type", ""))
        if reference.startswith("sha256:"):
            if manifest.digest != reference:
                raise RegistryError("bad_response", f"manifest does not match its digest {reference}")
            self._remember(key, manifest)
        # What a tag names is not kept: nothing asks for it by digest again (an index's entries are
        # fetched by digest and kept), and 4,096 image manifests with their parsed JSON are ~14 MB.
        return manifest

    async def get_blob(self, registry: str, repository: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        key = (registry, repository, digest)
        cached = self._by_digest.get(key)
        if isinstance(cached, bytes):
            return cached
        response = await self._request(
            "GET", registry, repository, f"/v2/{repository}/blobs/{digest}", what="blob", limit=limit,
        )
        if "sha256:" + hashlib.sha256(response.content).hexdigest() != digest:
            raise RegistryError("bad_response", f"blob does not match its digest {digest}")
        self._remember(key, response.content)
        return response.content

    @contextlib.asynccontextmanager
    async def open_blob(self, registry: str, repository: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """A blob's bytes as they arrive, in chunks, never all in memory and NOT checked against
        the digest: the caller does that as it reads. Waiting for the answer, and then for each
        chunk, is bounded by `timeout`."""
        scope = f"repository:{repository}:pull"
        url = self.base_url(registry) + f"/v2/{repository}/blobs/{digest}"
        async with contextlib.AsyncExitStack() as stack:
            response = await self._open_stream(stack, url, self._cached_authorization(registry, scope))
            if response.status_code == 401:
                auth = await self._authorize(registry, scope, response.headers.get("www-authenticate", ""))
                if auth is not None:
                    await response.aclose()
                    response = await self._open_stream(stack, url, auth)
            _check_status(_Answer(response.status_code, response.headers, b""), "blob")
            yield self._chunks(response)

    async def _open_stream(self, stack: contextlib.AsyncExitStack, url: str, auth: str | None) -> httpx.Response:
        headers = {"Authorization": auth} if auth else {}
        with self._translated_errors():
            async with asyncio.timeout(self.timeout):  # in this task: the stream is closed by it too
                return await stack.enter_async_context(self._http.stream("GET", url, headers=headers))

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        with self._translated_errors():
            async for chunk in response.aiter_bytes():
                yield chunk

    def _remember(self, key: tuple[str, str, str], value: Manifest | bytes) -> None:
        if len(self._by_digest) >= _DIGESTED_CACHE_MAX:
            self._by_digest.pop(next(iter(self._by_digest)))
        self._by_digest[key] = value

    async def _request(
        self, method: str, registry: str, repository: str, path: str, *,
        accept: str | None = None, what: str, limit: int | None = None,
    ) -> _Answer:
        scope = f"repository:{repository}:pull"
        headers = {"Accept": accept} if accept else {}
        auth = self._cached_authorization(registry, scope)
        response = await self._send(method, self.base_url(registry) + path, headers, auth, limit)
        if response.status_code == 401:
            auth = await self._authorize(registry, scope, response.headers.get("www-authenticate", ""))
            if auth is not None:
                response = await self._send(method, self.base_url(registry) + path, headers, auth, limit)
        return _check_status(response, what)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], auth: str | None, limit: int | None,
    ) -> _Answer:
        if auth:
            headers = {**headers, "Authorization": auth}
        with self._translated_errors():
            return await asyncio.wait_for(self._fetch(method, url, headers, limit), self.timeout)

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """httpx and timeout errors as RegistryError kinds."""
        try:
            yield
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise RegistryError("timeout", f"timeout after {self.timeout:g}s") from None
        except httpx.ConnectError as exc:
            if _plain_http_answer(exc):
                raise RegistryError(
                    "tls", "TLS: the registry answered in plain HTTP; if it has no TLS, add it to --insecure-registries"
                ) from None
            if isinstance(exc.__cause__, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
                raise RegistryError("tls", f"TLS: {_short(exc)}") from None
            raise RegistryError("unreachable", f"unreachable: {_short(exc)}") from None
        except httpx.HTTPError as exc:
            raise RegistryError("unreachable", f"connection failed: {_short(exc)}") from None

    async def _fetch(self, method: str, url: str, headers: dict[str, str], limit: int | None) -> _Answer:
        async with self._http.stream(method, url, headers=headers) as response:
            chunks: list[bytes] = []
            if method != "HEAD" and response.status_code < 300:
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise RegistryError("bad_response", f"response larger than {limit} bytes")
                    chunks.append(chunk)
            return _Answer(response.status_code, response.headers, b"".join(chunks))

    def _cached_authorization(self, registry: str, scope: str) -> str | None:
        token = self._tokens.get((registry, scope))
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if registry in self._basic_hosts:
            creds = self.auth.credentials(registry)
            return _basic(creds) if creds else None
        return None

    async def _authorize(self, registry: str, scope: str, challenge: str) -> str | None:
        """Answer a 401 challenge: basic with the configured credentials, or a bearer token from
        the realm (with those credentials, else anonymously). None when there is nothing to try."""
        scheme, params = parse_challenge(challenge)
        creds = self.auth.credentials(registry)
        if scheme == "basic":
            if creds is None:
                return None
            self._basic_hosts.add(registry)
            return _basic(creds)
        if scheme != "bearer" or not params.get("realm"):
            return None
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": _basic(creds)} if creds else {}
        try:
            response = await asyncio.wait_for(
                self._http.get(params["realm"], params=query, headers=headers), self.timeout
            )
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise RegistryError("timeout", f"token service timeout after {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise RegistryError("unreachable", f"token service unreachable: {_short(exc)}") from None
        if response.status_code in (401, 403):
            raise RegistryError("unauthorized", f"{response.status_code} unauthorized (token service)", response.status_code)
        if response.status_code != 200:
            raise RegistryError("server_error", f"token service answered {response.status_code}", response.status_code)
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError("bad_response", "token service answer is not a token") from None
        if not isinstance(token, str) or not token:
            raise RegistryError("bad_response", "token service answer has no token")
        # Renew a little early; the registry's clock decides, not ours.
        self._tokens[(registry, scope)] = (token, time.monotonic() + max(lifetime - 10, lifetime / 2))
        return f"Bearer {token}"


def _check_status(response: _Answer, what: str) -> _Answer:
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status == 404:
        raise RegistryError("not_found", f"{what} not found", status)
    if status in (401, 403):
        raise RegistryError("unauthorized", f"{status} unauthorized", status)
    if status == 429 or status >= 500:
        raise RegistryError("server_error", f"registry answered {status}", status)
    raise RegistryError("bad_response", f"registry answered {status}", status)


def _manifest_what(reference: str) -> str:
    return "manifest" if reference.startswith("sha256:") else "tag"


def _basic(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


# What OpenSSL says when the bytes that came back where a TLS record should be are an HTTP response.
_PLAIN_HTTP_REASONS = ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG")


def _plain_http_answer(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError) and cause.reason in _PLAIN_HTTP_REASONS:
            return True
        cause = cause.__cause__ or cause.__context__
    return any(reason in str(exc) for reason in _PLAIN_HTTP_REASONS)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
