"""`skill-webhook serve`: wire settings, source, TLS and the two listeners together, and run them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import uvicorn
from uvicorn.loops.auto import auto_loop_factory

from app.core.mutation.capability import decide_image_volumes
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.review import MutationOptions
from app.core.mutation.image_policy import ImagePolicy
from app.core.validation.agentruntime import ValidationOptions
from app.sources.base import AgentRuntimeSource
from app.sources.files.source import FileSource

from app.service.cli.options import network_problem
from app.service.http.app import ServiceState, create_app, create_health_app
from app.service.http.delivery import DeliveryWiring, build_delivery
from app.service.metrics import WebhookMetrics
from app.service.settings import Settings
from app.service.http.tls import ReloadingTLSContext

if TYPE_CHECKING:  # imported where used: the embedded default (file source, resolver off) never loads them
    from app.sources.registry.resolver import SkillImageResolver

log = logging.getLogger("skill_webhook.serve")


class StartupError(RuntimeError):
    """A setting or environment problem that must stop `serve` with a clear message."""


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal handling: `run_servers` stops both listeners together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def validation_options(settings: Settings, image_policy: ImagePolicy | None = None) -> ValidationOptions:
    return ValidationOptions(
        registry_allow=settings.registries, agentruntime_api=settings.agentruntime_api, domain=settings.names,
        image_policy=image_policy, delivery=settings.delivery,
    )


def build_source(
    settings: Settings, index: AgentRuntimeIndex, metrics: WebhookMetrics, options: ValidationOptions
) -> AgentRuntimeSource:
    if settings.resolved_source() == "file":
        if not settings.runtimes.exists():
            # Running ready with no AgentRuntimes would admit every pod without its skills.
            raise StartupError(f"--runtimes {settings.runtimes}: no such file")
        return FileSource(index, settings.runtimes, options=options)
    # Imported here so that the file source (the embedded default) never pays for the kube client.
    from app.sources.kube.agentruntimes import KubeInformerSource, decode_agentruntime, make_api_client
    from app.sources.kube.reflector import InformerMetrics

    if settings.kubeconfig is not None and not settings.kubeconfig.is_file():
        raise StartupError(f"--kubeconfig {settings.kubeconfig}: no such file")
    try:
        api_client = make_api_client(settings.kubeconfig)
    except Exception as err:  # the kubernetes client raises several unrelated types for bad configs
        raise StartupError(f"cannot build a Kubernetes client: {err}") from err
    hooks = InformerMetrics(
        on_restart=lambda reason: metrics.watch_restarts.labels(reason).inc(),
        on_sync=lambda count: (metrics.cache_synced.set(1), metrics.agentruntimes_cached.set(count)),
    )
    return KubeInformerSource(
        index, api_client=api_client, agentruntime_api=settings.agentruntime_api, metrics=hooks,
        decode=lambda obj: decode_agentruntime(obj, options),
    )


def tls_files(settings: Settings, source_kind: str) -> tuple[Path, Path]:
    """The serving pair: given files, or (file source only) a self-made CA and certificate."""
    if settings.tls_cert_file and settings.tls_key_file:
        return settings.tls_cert_file, settings.tls_key_file
    if settings.tls_cert_file or settings.tls_key_file:
        raise StartupError("--tls-cert-file and --tls-key-file go together")
    if source_kind != "file":
        # In a cluster a silent self-signed certificate would only fail later, at the API server.
        raise StartupError(
            "--tls-cert-file and --tls-key-file are required with the Kubernetes source "
            "(mount the serving Secret; see manifests/ and `skill-webhook certs`)"
        )
    from app.service.install.certs import ensure_dev_certs

    paths = ensure_dev_certs(settings.certs_dir)
    log.info(
        "using development certificates; trust the CA with curl --cacert %s", paths.ca_cert,
        extra={"fields": {"ca": str(paths.ca_cert), "cert": str(paths.tls_cert)}},
    )
    return paths.tls_cert, paths.tls_key


def load_tls(cert_file: Path, key_file: Path, on_reload: Callable[[ReloadingTLSContext], None]) -> ReloadingTLSContext:
    """The serving pair, loaded; StartupError naming the flag and saying what is wrong (not OpenSSL's
    "PEM lib (_ssl.c:NNNN)")."""
    for flag, path in (("--tls-cert-file", cert_file), ("--tls-key-file", key_file)):
        if not path.is_file():
            raise StartupError(f"{flag} {path}: no such file")
    try:
        return ReloadingTLSContext(cert_file, key_file, on_reload=on_reload)
    except ssl.SSLError as err:
        why = ("the key is not the certificate's" if err.reason == "KEY_VALUES_MISMATCH"
               else "not a PEM certificate and its private key")
        raise StartupError(f"--tls-cert-file {cert_file} / --tls-key-file {key_file}: {why}") from None
    except (OSError, ValueError) as err:
        raise StartupError(f"--tls-cert-file {cert_file} / --tls-key-file {key_file}: {err}") from None


def resolver_enabled(settings: Settings) -> bool:
    """The resolver runs with the Kubernetes source, and with the file source (a developer's machine,
    whose sample images may not be reachable) only when a resolver setting was given explicitly."""
    if settings.resolve_interval <= 0:
        return False
    if settings.resolved_source() == "kube":
        return True
    explicit = {"resolve_interval", "pin_digests", "verify_signatures", "registry_auth", "insecure_registries"}
    return bool(explicit & settings.model_fields_set)


def build_resolver(settings: Settings, index: AgentRuntimeIndex, metrics: WebhookMetrics) -> SkillImageResolver | None:
    if not resolver_enabled(settings):
        if settings.pin_digests != "off" or settings.verify_signatures != "off":
            raise StartupError("--pin-digests and --verify-signatures need the resolver: --resolve-interval must be > 0")
        return None
    from app.sources.registry.cosign import CosignKeyError
    from app.sources.registry.resolver import ResolverHooks, SkillImageResolver

    hooks = ResolverHooks(
        on_resolution=lambda result, registry, seconds: (
            metrics.resolutions.labels(result).inc(), metrics.resolve_latency.labels(registry).observe(seconds)
        ),
        on_signature=lambda verdict: metrics.signature_verdicts.labels(verdict).inc(),
    )
    try:
        resolver = SkillImageResolver.from_settings(
            settings, wanted=lambda: {s.image for r in index.all() for s in r.spec.skills}, hooks=hooks
        )
    except (CosignKeyError, OSError, ValueError) as err:
        raise StartupError(f"--cosign-key / registry settings: {err}") from err
    index.add_listener(resolver.runtime_changed)
    # Counted when scraped.
    metrics.digests_cached.set_function(lambda: sum(1 for f in resolver.snapshot().values() if f.digest))
    metrics.tags_gone.set_function(lambda: sum(1 for f in resolver.snapshot().values() if f.tag_gone))
    return resolver


@dataclass
class ServiceParts:
    """What `serve` starts and stops, built by `build_state`."""

    state: ServiceState
    source: AgentRuntimeSource
    tls: ReloadingTLSContext
    resolver: SkillImageResolver | None = None
    delivery: DeliveryWiring | None = None

    def start(self) -> None:
        self.source.start()
        self.tls.start()
        if self.resolver is not None:
            self.resolver.start()
        if self.delivery is not None:
            self.delivery.start()

    def stop(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()
        if self.resolver is not None:
            self.resolver.stop()
        self.source.stop()
        self.tls.stop()


def build_state(settings: Settings) -> ServiceParts:
    index = AgentRuntimeIndex()
    metrics = WebhookMetrics()
    source_kind = settings.resolved_source()
    resolver = build_resolver(settings, index, metrics)
    image_policy = (
        ImagePolicy(resolver.facts, settings.pin_digests, settings.verify_signatures) if resolver is not None else None
    )
    validation = validation_options(settings, image_policy)
    # The cache records the verdict of the rules that need no other object; registry facts change
    # without the object changing, so they are checked at admission instead, never cached.
    source = build_source(settings, index, metrics, validation_options(settings))
    cert_file, key_file = tls_files(settings, source_kind)

    def on_reload(context: ReloadingTLSContext) -> None:
        if context.not_after is not None:
            metrics.certificate_expiry.set(context.not_after.timestamp())
        log.info("serving certificate loaded", extra={"fields": {"cert": str(cert_file), "notAfter": context.not_after}})

    tls = load_tls(cert_file, key_file, on_reload)

    server_version = None
    if source_kind == "kube" and settings.image_volumes == "auto":
        try:
            server_version = source.server_version()
        except Exception as err:
            raise StartupError(
                f"cannot read the API server's /version: {network_problem(err)}; "
                "set --image-volumes on|off to start without it"
            ) from err
    decision = decide_image_volumes(settings.image_volumes, server_version)
    log.info(
        "image volumes %s: %s", "on" if decision.enabled else "off", decision.reason,
        extra={"fields": {"imageVolumes": decision.enabled, "serverVersion": server_version}},
    )
    delivery = build_delivery(settings, source_kind, decision, metrics)
    state = ServiceState(
        index=index,
        mutation=MutationOptions(
            settings.sidecars, decision.enabled, decision.reason, domain=settings.names, image_policy=image_policy,
            delivery=settings.delivery, nodes=delivery.nodes, puller=settings.puller(),
        ),
        validation=validation,
        metrics=metrics,
        certificate_loaded=lambda: tls.loaded,
    )
    delivery.bind(state)
    return ServiceParts(state, source, tls, resolver, delivery)


# How long a background thread (informers, reconciler, resolver) may keep the GIL when the event loop
# wants it back. Python's default, 5 ms, is paid by every admission whose thread released the GIL for a
# socket write while a background thread was runnable. Measured side by side (two serve processes, 10,000
# AgentRuntimes and pods, 50 pod changes/s, the resolver re-resolving 10,000 images every 60 s): p99 at
# 500 requests/s 12-20 ms with half a millisecond against 19-23 ms with the default. With idle threads it
# costs nothing.
GIL_SWITCH_INTERVAL = 0.0005


def listen(host: str, port: int, flag: str, backlog: int) -> socket.socket:
    """A socket listening on host:port; StartupError naming the port and its flag when it cannot be."""
    try:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as err:
        why = {errno.EADDRINUSE: "the address is already in use (another process listens there)",
               errno.EACCES: "permission denied"}.get(err.errno, (err.strerror or str(err)).lower())
        raise StartupError(f"{flag} {port}: cannot listen on {host}:{port}: {why}") from None


def listeners(settings: Settings) -> list[socket.socket]:
    """Both listening sockets, bound before anything starts: a port in use is a startup error, not a
    failure after "ready" (and never half a webhook: the first socket is closed if the second fails)."""
    bound = [listen(settings.host, settings.port, "--port", settings.backlog)]
    if settings.metrics_port:
        try:
            bound.append(listen(settings.metrics_host, settings.metrics_port, "--metrics-port", 128))
        except StartupError:
            bound[0].close()
            raise
    return bound


def serve(settings: Settings) -> int:
    started = time.monotonic()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    sockets = listeners(settings)
    try:
        return _serve(settings, sockets, started)
    finally:
        for sock in sockets:
            sock.close()


def _serve(settings: Settings, sockets: list[socket.socket], started: float) -> int:
    parts = build_state(settings)
    state, source, tls = parts.state, parts.source, parts.tls
    reconciler = None
    if settings.resolved_reconcile() != "off":  # docs/skill-changes.md
        from app.service.controllers.wiring import build_reconciler  # imported only then: the file source never loads the kube client

        try:
            reconciler = build_reconciler(settings, state)
        except ValueError as err:
            raise StartupError(str(err)) from err
    log.info(
        "starting", extra={"fields": {"source": source.name, "runtimes": str(settings.runtimes), "pid": os.getpid(),
                                      "port": settings.port, "metricsPort": settings.metrics_port}},
    )
    parts.start()  # the source, the certificate watcher and the registry resolver (when on)
    if reconciler is not None:
        reconciler.start()
    try:
        # uvicorn's own loop choice (uvloop when installed): asyncio.run() would use the stdlib loop,
        # whose pure-Python TLS layer costs a fifth of the CPU of every admission.
        with asyncio.Runner(loop_factory=auto_loop_factory(use_subprocess=False)) as runner:
            runner.run(run_servers(settings, state, tls, started, sockets))
    finally:
        if reconciler is not None:
            reconciler.stop()
        parts.stop()
    return 0


async def run_servers(
    settings: Settings, state: ServiceState, tls: ReloadingTLSContext, started: float,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve the webhook (and the health listener) until SIGINT/SIGTERM. With `sockets` (from
    `listeners`) uvicorn serves those; without, it binds host and port itself."""
    common = dict(log_config=None, access_log=False, lifespan="off", server_header=False, date_header=False)
    webhook = _Server(uvicorn.Config(
        create_app(state), host=settings.host, port=settings.port, ssl_context_factory=tls.uvicorn_factory,
        backlog=settings.backlog, timeout_keep_alive=30, **common,
    ))
    servers = [webhook]
    if settings.metrics_port:
        servers.append(_Server(uvicorn.Config(
            create_health_app(state), host=settings.metrics_host, port=settings.metrics_port, **common,
        )))

    def stop(*_: object) -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError):  # not the main thread (embedded): no signals
            loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(s.serve(sockets=[sockets[i]] if sockets else None)) for i, s in enumerate(servers)]
    ready = asyncio.create_task(_log_ready(state, servers, started))
    # One listener failing stops the other: half a webhook is worse than none.
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()
    ready.cancel()
    await asyncio.gather(ready, *tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if any(not s.started for s in servers):
        raise StartupError("a listener failed to start (is the port in use?)")


async def _log_ready(state: ServiceState, servers: list[uvicorn.Server], started: float) -> None:
    while not (all(s.started for s in servers) and state.index.synced.is_set() and state.certificate_loaded()):
        await asyncio.sleep(0.05)
    urls = [f"https://{_address(servers[0])}"] + [f"http://{_address(s)}" for s in servers[1:]]
    log.info("ready", extra={"fields": {"listening": urls, "agentRuntimes": len(state.index),
                                        "startupSeconds": round(time.monotonic() - started, 3)}})


def _address(server: uvicorn.Server) -> str:
    host = server.config.host
    return f"[{host}]:{server.config.port}" if ":" in host else f"{host}:{server.config.port}"
