"""Prometheus metrics of the webhook (docs/configuration.md "Service surface"), on a registry of our own so tests can build many apps."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Admission latency sits in the millisecond range; buckets resolve the API server's 5 s timeout too.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class WebhookMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.admissions = Counter(
            "skill_webhook_admissions", "Admission reviews answered, by endpoint and decision",
            ["endpoint", "decision"], registry=r,
        )
        self.latency = Histogram(
            "skill_webhook_admission_duration_seconds", "Time to decide an admission review",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.skills_injected = Counter(
            "skill_webhook_skills_injected", "Skills given to pods, by delivery (image, extract)", ["delivery"],
            registry=r,
        )
        self.pods_injected = Counter(
            "skill_webhook_pods_injected", "Pods given skills, by delivery (image, extract, or mixed: some of each)",
            ["delivery"], registry=r,
        )
        # Delivery (docs/delivery.md): what skills without an annotation get now, and why.
        self.delivery_decision = Gauge(
            "skill_webhook_delivery_decision",
            "1 for the delivery in force (image, extract, or none: --delivery image without image volumes), "
            "with the reason", ["delivery", "reason"], registry=r,
        )
        self.nodes_without_image_volumes = Gauge(
            "skill_webhook_nodes_without_image_volumes",
            "1 per node whose container runtime cannot mount image volumes (containerd < 2.1, CRI-O < 1.31)",
            ["node", "runtime_version"], registry=r,
        )
        self.node_watch_restarts = Counter(
            "skill_webhook_node_watch_restarts", "Restarts of the node watch (--delivery auto), by reason", ["reason"],
            registry=r,
        )
        self.image_volumes_unsupported = Counter(
            "skill_webhook_image_volumes_unsupported_pods",
            "Pods whose skills were not injected because the cluster cannot run image volumes", registry=r,
        )
        self.cache_synced = Gauge(
            "skill_webhook_cache_synced", "1 once the AgentRuntime cache has finished its first list", registry=r
        )
        self.agentruntimes_cached = Gauge(
            "skill_webhook_agentruntimes_cached", "AgentRuntimes in the cache", registry=r
        )
        self.watch_restarts = Counter(
            "skill_webhook_watch_restarts", "Restarts of the AgentRuntime watch, by reason", ["reason"], registry=r
        )
        self.certificate_expiry = Gauge(
            "skill_webhook_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, as a Unix time", registry=r,
        )
        self.bad_requests = Counter(
            "skill_webhook_bad_requests", "Bodies refused before a decision (400/413), by endpoint and code",
            ["endpoint", "code"], registry=r,
        )
        # Stale-pod reconciler (docs/skill-changes.md).
        self.pod_watch_restarts = Counter(
            "skill_webhook_pod_watch_restarts", "Restarts of the reconciler's Pod watch, by reason", ["reason"],
            registry=r,
        )
        self.stale_pods = Gauge(
            "skill_webhook_stale_pods", "Running pods whose injected skills differ from their AgentRuntime's now",
            ["namespace", "agentruntime"], registry=r,
        )
        self.evictions = Counter(
            "skill_webhook_evictions", "Evictions of stale pods, by result (evicted, blocked, gone, error)",
            ["result"], registry=r,
        )
        self.rollouts_blocked = Gauge(
            "skill_webhook_rollouts_blocked", "1 while an AgentRuntime's rollout waits after a refused eviction",
            ["namespace", "agentruntime"], registry=r,
        )
        self.leader = Gauge(
            "skill_webhook_leader", "1 while this replica holds the reconciler's Lease", registry=r
        )
        self.leader_changes = Counter(
            "skill_webhook_leader_changes", "Changes of the reconciler's Lease holder seen by this replica", registry=r
        )
        # Skill supply chain (docs/registries.md).
        self.resolutions = Counter(
            "skill_webhook_image_resolutions", "Registry resolutions of skill images, by result (ok or error kind)",
            ["result"], registry=r,
        )
        self.resolve_latency = Histogram(
            "skill_webhook_image_resolve_duration_seconds", "Time to resolve one skill image, by registry",
            ["registry"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r,
        )
        self.digests_cached = Gauge(
            "skill_webhook_image_digests_cached", "Skill image references whose digest is known", registry=r
        )
        self.unpinned_pods = Counter(
            "skill_webhook_unpinned_pods",
            "Pods admitted with a skill injected by tag because its digest was not known yet (--pin-digests on)",
            registry=r,
        )
        self.signature_verdicts = Counter(
            "skill_webhook_signature_verdicts", "Signature checks of skill images, by verdict", ["verdict"], registry=r
        )
        self.tags_gone = Gauge(
            "skill_webhook_image_tags_gone", "Skill image tags that no longer resolve (the last digest is kept)",
            registry=r,
        )

    def observe_injection(self, skills: int, extracted: int) -> None:
        """One pod given `skills` skills, `extracted` of them by extraction."""
        if extracted:
            self.skills_injected.labels("extract").inc(extracted)
        if skills > extracted:
            self.skills_injected.labels("image").inc(skills - extracted)
        self.pods_injected.labels("image" if not extracted else "extract" if extracted == skills else "mixed").inc()

    def publish_delivery(self, delivery: str, reason: str, unable: tuple[tuple[str, str], ...] = ()) -> None:
        """The delivery decision now, and the nodes that cannot mount image volumes."""
        self.delivery_decision.clear()
        self.delivery_decision.labels(delivery, reason).set(1)
        self.nodes_without_image_volumes.clear()
        for node, runtime_version in unable:
            self.nodes_without_image_volumes.labels(node, runtime_version).set(1)

    def observe_admission(self, endpoint: str, decision: str, seconds: float) -> None:
        self.admissions.labels(endpoint, decision).inc()
        self.latency.labels(endpoint).observe(seconds)
