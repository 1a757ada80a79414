"""`skill-webhook serve`: wire settings, source, TLS and the two listeners together, and run them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Iterator

import uvicorn
from uvicorn.loops.auto import auto_loop_factory

from app.core.capability import decide_image_volumes
from app.core.index import AgentRuntimeIndex
from app.core.mutation import MutationOptions
from app.core.validation import ValidationOptions
from app.sources.base import AgentRuntimeSource
from app.sources.files import FileSource

from .app import ServiceState, create_app, create_health_app
from .certs import ensure_dev_certs
from .metrics import WebhookMetrics
from .settings import Settings
from .tls import ReloadingTLSContext

log = logging.getLogger("skill_webhook.serve")


class StartupError(RuntimeError):
    """A setting or environment problem that must stop `serve` with a clear message."""


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal handling: `run_servers` stops both listeners together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_source(settings: Settings, index: AgentRuntimeIndex, metrics: WebhookMetrics) -> AgentRuntimeSource:
    if settings.resolved_source() == "file":
        if not settings.runtimes.exists():
            # Running ready with no AgentRuntimes would admit every pod without its skills.
            raise StartupError(f"--runtimes {settings.runtimes}: no such file or directory")
        return FileSource(index, settings.runtimes, agentruntime_api=settings.agentruntime_api)
    # Imported here so that the file source (the embedded default) never pays for the kube client.
    from app.sources.kube import InformerMetrics, KubeInformerSource, make_api_client

    try:
        api_client = make_api_client(settings.kubeconfig)
    except Exception as err:  # the kubernetes client raises several unrelated types for bad configs
        raise StartupError(f"cannot build a Kubernetes client: {err}") from err
    hooks = InformerMetrics(
        on_restart=lambda reason: metrics.watch_restarts.labels(reason).inc(),
        on_sync=lambda count: (metrics.cache_synced.set(1), metrics.agentruntimes_cached.set(count)),
    )
    return KubeInformerSource(index, api_client=api_client, agentruntime_api=settings.agentruntime_api, metrics=hooks)


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
    paths = ensure_dev_certs(settings.certs_dir)
    log.info(
        "using development certificates; trust the CA with curl --cacert %s", paths.ca_cert,
        extra={"fields": {"ca": str(paths.ca_cert), "cert": str(paths.tls_cert)}},
    )
    return paths.tls_cert, paths.tls_key


def build_state(settings: Settings) -> tuple[ServiceState, AgentRuntimeSource, ReloadingTLSContext]:
    index = AgentRuntimeIndex()
    metrics = WebhookMetrics()
    source_kind = settings.resolved_source()
    source = build_source(settings, index, metrics)
    cert_file, key_file = tls_files(settings, source_kind)

    def on_reload(context: ReloadingTLSContext) -> None:
        if context.not_after is not None:
            metrics.certificate_expiry.set(context.not_after.timestamp())
        log.info("serving certificate loaded", extra={"fields": {"cert": str(cert_file), "notAfter": context.not_after}})

    try:
        tls = ReloadingTLSContext(cert_file, key_file, on_reload=on_reload)
    except (OSError, ValueError) as err:
        raise StartupError(f"cannot load the serving certificate {cert_file} / {key_file}: {err}") from err

    server_version = None
    if source_kind == "kube" and settings.image_volumes == "auto":
        try:
            server_version = source.server_version()
        except Exception as err:
            raise StartupError(f"{err}; set --image-volumes on|off to start without it") from err
    decision = decide_image_volumes(settings.image_volumes, server_version)
    log.info(
        "image volumes %s: %s", "on" if decision.enabled else "off", decision.reason,
        extra={"fields": {"imageVolumes": decision.enabled, "serverVersion": server_version}},
    )
    state = ServiceState(
        index=index,
        mutation=MutationOptions(settings.sidecars, decision.enabled, decision.reason),
        validation=ValidationOptions(
            registry_allow=settings.registries, agentruntime_api=settings.agentruntime_api, domain=settings.names
        ),
        metrics=metrics,
        certificate_loaded=lambda: tls.loaded,
    )
    return state, source, tls


def serve(settings: Settings) -> int:
    started = time.monotonic()
    state, source, tls = build_state(settings)
    reconciler = None
    if settings.resolved_reconcile() != "off":  # README "When skills change"
        from .reconciler import build_reconciler  # imported only then: the file source never loads the kube client

        try:
            reconciler = build_reconciler(settings, state)
        except ValueError as err:
            raise StartupError(str(err)) from err
    log.info(
        "starting", extra={"fields": {"source": source.name, "runtimes": str(settings.runtimes),
                                      "port": settings.port, "metricsPort": settings.metrics_port}},
    )
    source.start()
    tls.start()
    if reconciler is not None:
        reconciler.start()
    try:
        # uvicorn's own loop choice (uvloop when installed): asyncio.run() would use the stdlib loop,
        # whose pure-Python TLS layer costs a fifth of the CPU of every admission.
        with asyncio.Runner(loop_factory=auto_loop_factory(use_subprocess=False)) as runner:
            runner.run(run_servers(settings, state, tls, started))
    finally:
        if reconciler is not None:
            reconciler.stop()
        source.stop()
        tls.stop()
    return 0


async def run_servers(settings: Settings, state: ServiceState, tls: ReloadingTLSContext, started: float) -> None:
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
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    asyncio.create_task(_log_ready(state, started))
    # One listener failing (port in use) stops the other: half a webhook is worse than none.
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if any(not s.started for s in servers):
        raise StartupError("a listener failed to start (is the port in use?)")


async def _log_ready(state: ServiceState, started: float) -> None:
    while not (state.index.synced.is_set() and state.certificate_loaded()):
        await asyncio.sleep(0.05)
    log.info("ready", extra={"fields": {"agentRuntimes": len(state.index),
                                        "startupSeconds": round(time.monotonic() - started, 3)}})
