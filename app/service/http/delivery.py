"""`serve`'s delivery decision (docs/delivery.md): `--delivery`, whether the API server keeps image
volumes, and, with the Kubernetes source under `--delivery auto`, the nodes' container runtimes, kept
current by the node informer. Stated in the log at start and at every change, and as metrics.

Reading nodes needs `list/watch nodes`, which the install set grants in its own ClusterRole; without it
(403) `auto` decides from the API server's version alone, and says so.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.mutation.capability import ImageVolumeDecision
from app.core.mutation.delivery import DeliveryPolicy, NodeRuntimes

from app.service.metrics import WebhookMetrics
from app.service.settings import Settings

if TYPE_CHECKING:  # the file source never loads the Kubernetes client
    from app.service.http.app import ServiceState
    from app.sources.kube.nodes import NodeInformer

log = logging.getLogger("skill_webhook.delivery")


@dataclass
class DeliveryWiring:
    """The initial node verdict (None: nodes not read) and the informer that keeps it current."""

    metrics: WebhookMetrics
    nodes: NodeRuntimes | None = None
    informer: NodeInformer | None = None
    state: ServiceState | None = None

    def bind(self, state: ServiceState) -> None:
        """Publish the decision made at start; later verdicts replace `state.mutation` (read per request)."""
        self.state = state
        self._publish(state.mutation.delivery_policy, at_start=True)

    def start(self) -> None:
        if self.informer is not None:
            self.informer.start()

    def stop(self) -> None:
        if self.informer is not None:
            self.informer.stop()

    def nodes_changed(self, verdict: NodeRuntimes) -> None:
        """The node informer's listener: the mutation (and staleness, which reads it) use the new verdict."""
        state = self.state
        if state is None:
            self.nodes = verdict
            return
        state.mutation = dataclasses.replace(state.mutation, nodes=verdict)
        self._publish(state.mutation.delivery_policy, at_start=False)

    def _publish(self, policy: DeliveryPolicy, *, at_start: bool) -> None:
        delivery, reason = policy.describe()
        unable = policy.nodes.unable if policy.nodes is not None else ()
        self.metrics.publish_delivery(delivery, reason, unable)
        log.info(
            "delivery %s: %s", delivery, reason,
            extra={"fields": {"delivery": delivery, "setting": policy.setting, "atStart": at_start,
                              "nodesWithoutImageVolumes": [f"{n} ({v})" for n, v in unable]}},
        )


def build_delivery(settings: Settings, source_kind: str, image_volumes: ImageVolumeDecision,
                   metrics: WebhookMetrics) -> DeliveryWiring:
    """The node verdict for the start-up decision, and the informer, where they matter: the Kubernetes
    source, `--delivery auto` and an API server that keeps image volumes (otherwise `auto` extracts
    every skill whatever the nodes run)."""
    wiring = DeliveryWiring(metrics)
    if source_kind != "kube" or settings.delivery != "auto" or not image_volumes.enabled:
        return wiring
    from app.sources.kube.agentruntimes import make_api_client
    from app.sources.kube.nodes import NodeInformer, NodesForbidden
    from app.sources.kube.reflector import InformerMetrics, describe

    try:
        api_client = make_api_client(settings.kubeconfig)
    except Exception as err:  # noqa: BLE001 - the AgentRuntime source made one from the same settings already
        log.warning("nodes not read (%s): --delivery auto decides from the API server's version alone", err)
        return wiring
    hooks = InformerMetrics(on_restart=lambda reason: metrics.node_watch_restarts.labels(reason).inc())
    informer = NodeInformer(api_client, wiring.nodes_changed, metrics=hooks)
    try:
        wiring.nodes = informer.first_verdict()
    except NodesForbidden:
        log.warning(
            "nodes not read: the service account may not list nodes (403); --delivery auto decides from the API "
            "server's version alone, and a node whose container runtime cannot mount image volumes "
            "(containerd < 2.1, CRI-O < 1.31) starts pods without their skills; grant list/watch nodes "
            "(ClusterRole skill-webhook-nodes) or set --delivery extract",
        )
        return wiring
    except Exception as err:  # noqa: BLE001 - the informer retries: start without a verdict, not without a webhook
        log.warning("nodes not read yet (%s); the node informer keeps trying", describe(err))
    wiring.informer = informer
    return wiring
