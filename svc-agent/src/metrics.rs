//! Prometheus metrics and the readiness endpoint (`--metrics-addr`):
//! `GET /metrics`, `GET /readyz` (200 once the first complete state is
//! programmed, 503 before, and while the last self-check found a problem), `GET /healthz` (503 once a received change has
//! waited longer than `--healthz-timeout` unprogrammed: [`crate::health`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::EncodeLabelSet,
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    error::{Error, Result},
    health::Health,
};

/// Every metric the agent exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    ready: AtomicBool,
    /// Seconds from a source event's arrival to its map update.
    pub sync_latency: Histogram,
    /// Seconds spent computing and writing one batch.
    pub apply_duration: Histogram,
    /// Source events received.
    pub events: Counter,
    /// Batches applied.
    pub batches: Counter,
    /// Services known to the source.
    pub services: Gauge,
    /// Frontends in the maps.
    pub frontends: Gauge,
    /// Reverse-owner entries (SVC_BE_REV, SVC_BE_REV6).
    pub reverse_owners: Gauge,
    /// Services not (fully) programmed, by reason.
    refused: Family<ReasonLabel, Gauge>,
    /// Objects from the Kubernetes API that could not be decoded, by kind.
    undecodable: Family<KindLabel, Counter>,
    /// Connected UDP sockets reset because their backend was removed.
    pub udp_resets: Counter,
    /// What a UDP socket reset could not do, by reason.
    udp_reset_failures: Family<ReasonLabel, Counter>,
    /// North-south flow entries deleted by the sweep after expiring.
    pub flows_expired: Counter,
    /// North-south UDP flows dropped because their backend was removed.
    pub udp_flows_dropped: Counter,
    /// TC packets translated or untracked, by `result`.
    ns_packets: Family<ResultLabel, Counter>,
    /// TC packets dropped, by `reason`.
    ns_drops: Family<ReasonLabel, Counter>,
    /// kube-proxy's families (docs/metrics.md), so its dashboards and
    /// alerts work: trigger time of a slice change -> programmed.
    network_programming: Histogram,
    /// One batch, computed and written (kube-proxy's "sync").
    sync_duration: Histogram,
    /// Unix time of the last completed sync.
    sync_last: Gauge<f64, AtomicU64>,
    /// Unix time a change was last queued.
    sync_last_queued: Gauge<f64, AtomicU64>,
    /// EndpointSlice changes received, and not yet programmed.
    endpoint_changes_total: Counter,
    endpoint_changes_pending: Gauge,
    /// Service changes received, and not yet programmed.
    service_changes_total: Counter,
    service_changes_pending: Gauge,
    /// The last self-check found nothing wrong (1) or something (0).
    self_check_ok: Gauge,
    /// Problems the last self-check found, by reason.
    self_check_problems: Family<ReasonLabel, Gauge>,
    /// Self-checks run.
    self_checks: Counter,
    /// What the last self-check found wrong (for /readyz); `None`: nothing,
    /// or no check yet.
    self_check_failure: std::sync::Mutex<Option<String>>,
    /// Connects and sendmsgs to a frontend left untranslated because the
    /// caller's pod is exempt.
    pub socket_lb_skipped: Counter,
    /// Exempt pods, by `state`: resolved (its cgroup is in the map) or
    /// unresolved (no cgroup found yet).
    exempt_pods: Family<StateLabel, Gauge>,
}

/// The `state` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// kube-proxy's `network_programming_duration_seconds` buckets: 0.25 s
/// steps to 1 s, 1 s steps to 59 s, then 5 s to 115 s, then 30 s to 300 s.
fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Reasons of `svc_agent_udp_reset_failures_total`.
pub(crate) const UDP_RESET_FAILURES: [&str; 4] = ["socket", "netns", "invisible_process", "cgroup"];

/// The `reason` label of refused Services ([`crate::dataplane::writer::Refusal::label`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The `result` label of north-south packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The `kind` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers everything under the `svc_agent_` prefix.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("svc_agent");
        // 50 us .. ~1.6 s.
        let buckets = || prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16);
        let m = Self {
            ready: AtomicBool::new(false),
            sync_latency: Histogram::new(buckets()),
            apply_duration: Histogram::new(buckets()),
            events: Counter::default(),
            batches: Counter::default(),
            services: Gauge::default(),
            frontends: Gauge::default(),
            reverse_owners: Gauge::default(),
            refused: Family::default(),
            undecodable: Family::default(),
            udp_resets: Counter::default(),
            udp_reset_failures: Family::default(),
            flows_expired: Counter::default(),
            udp_flows_dropped: Counter::default(),
            ns_packets: Family::default(),
            ns_drops: Family::default(),
            network_programming: Histogram::new(network_programming_buckets()),
            // kube-proxy's: 1 ms doubling, 15 buckets.
            sync_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)),
            sync_last: Gauge::default(),
            sync_last_queued: Gauge::default(),
            endpoint_changes_total: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            self_check_ok: Gauge::default(),
            self_check_problems: Family::default(),
            self_checks: Counter::default(),
            self_check_failure: std::sync::Mutex::new(None),
            socket_lb_skipped: Counter::default(),
            exempt_pods: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sync_latency_seconds",
            "Time from receiving a source event to the map update being visible",
            m.sync_latency.clone(),
        );
        registry.register("apply_duration_seconds", "Time to compute and write one batch", m.apply_duration.clone());
        registry.register("source_events", "Source events received", m.events.clone());
        registry.register("batches", "Batches of coalesced events applied", m.batches.clone());
        registry.register("services", "Services known to the source", m.services.clone());
        registry.register("frontends", "Frontends programmed in the maps", m.frontends.clone());
        registry.register(
            "reverse_owners",
            "Backends whose connected sockets are translated without per-socket storage (SVC_BE_REV entries)",
            m.reverse_owners.clone(),
        );
        registry.register("refused_services", "Services not (fully) programmed, by reason", m.refused.clone());
        for reason in crate::dataplane::writer::Refusal::LABELS {
            // Created at zero so every reason has a series from the start.
            drop(m.refused.get_or_create(&ReasonLabel { reason }));
        }
        registry.register(
            "udp_resets",
            "Connected UDP sockets reset (SOCK_DESTROY) because their backend was removed",
            m.udp_resets.clone(),
        );
        registry.register(
            "north_south_flow_entries_expired",
            "North-south flow table entries (one per direction) deleted after their lifetime",
            m.flows_expired.clone(),
        );
        registry.register(
            "north_south_udp_flows_dropped",
            "North-south UDP flows dropped from the flow table because their backend was removed",
            m.udp_flows_dropped.clone(),
        );
        registry.register(
            "north_south_packets",
            "Packets of clients outside the node the TC programs translated (result=new_flow: a flow's first, \
             result=translated: a tracked flow's) or passed untouched because they cannot track them \
             (result=untracked: fragments, other protocols, non-IPv4)",
            m.ns_packets.clone(),
        );
        registry.register(
            "north_south_drops",
            "Packets the TC programs dropped, by reason: no_backend, no_snat_port, no_route, flow_table, rewrite, \
             source_range",
            m.ns_drops.clone(),
        );
        registry.register(
            "udp_reset_failures",
            "What resetting UDP sockets of removed backends could not do: reason=socket (destroy failed), \
             netns (could not enter or list a client namespace), invisible_process (a client process in \
             another PID namespace), cgroup (could not read the attached cgroup)",
            m.udp_reset_failures.clone(),
        );
        for reason in UDP_RESET_FAILURES {
            drop(m.udp_reset_failures.get_or_create(&ReasonLabel { reason }));
        }
        registry.register(
            "undecodable_objects",
            "Objects from the Kubernetes API that could not be decoded and were skipped, by kind",
            m.undecodable.clone(),
        );
        registry.register(
            "network_programming_duration_seconds",
            "kube-proxy's: time from an EndpointSlice change (its endpoints.kubernetes.io/last-change-trigger-time \
             annotation) until the maps carry it",
            m.network_programming.clone(),
        );
        registry.register(
            "sync_proxy_rules_duration_seconds",
            "kube-proxy's: time to compute and write one batch of changes",
            m.sync_duration.clone(),
        );
        registry.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "kube-proxy's: Unix time the last batch was programmed",
            m.sync_last.clone(),
        );
        registry.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "kube-proxy's: Unix time a change was last received",
            m.sync_last_queued.clone(),
        );
        registry.register(
            "sync_proxy_rules_endpoint_changes",
            "kube-proxy's: EndpointSlice changes received",
            m.endpoint_changes_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "kube-proxy's: EndpointSlice changes received and not yet programmed",
            m.endpoint_changes_pending.clone(),
        );
        registry.register(
            "sync_proxy_rules_service_changes",
            "kube-proxy's: Service changes received",
            m.service_changes_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_service_changes_pending",
            "kube-proxy's: Service changes received and not yet programmed",
            m.service_changes_pending.clone(),
        );
        registry.register(
            "self_check_ok",
            "1 if the last self-check found the programs pinned, attached at the configured cgroup and translating \
             a probe connect; 0 if not (also before the first check)",
            m.self_check_ok.clone(),
        );
        registry.register(
            "self_check_problems",
            "Problems the last self-check found, by reason: missing_pin, pin_mismatch, not_attached, probe, io",
            m.self_check_problems.clone(),
        );
        for reason in crate::dataplane::self_check::REASONS {
            drop(m.self_check_problems.get_or_create(&ReasonLabel { reason }));
        }
        registry.register("self_checks", "Self-checks run", m.self_checks.clone());
        registry.register(
            "socket_lb_skipped",
            "Connects and sendmsgs to a Service address left untranslated because the caller's pod (or its \
             namespace) opts out with svc.dataplane.io/socket-lb: disabled",
            m.socket_lb_skipped.clone(),
        );
        registry.register(
            "exempt_pods",
            "Pods of this node that opt out of socket translation, by state: resolved (their cgroup is exempt), \
             unresolved (no cgroup found for them yet)",
            m.exempt_pods.clone(),
        );
        m.set_exempt_pods(0, 0);
        Self { registry, ..m }
    }

    /// Sets the exempt-pod gauges.
    pub(crate) fn set_exempt_pods(&self, resolved: usize, unresolved: usize) {
        self.exempt_pods.get_or_create(&StateLabel { state: "resolved" }).set(resolved as i64);
        self.exempt_pods.get_or_create(&StateLabel { state: "unresolved" }).set(unresolved as i64);
    }

    /// Records a self-check's findings (empty: all well).
    pub(crate) fn self_checked(&self, problems: &[crate::dataplane::self_check::Problem]) {
        self.self_checks.inc();
        self.self_check_ok.set(i64::from(problems.is_empty()));
        for reason in crate::dataplane::self_check::REASONS {
            let n = problems.iter().filter(|p| p.label() == reason).count();
            self.self_check_problems.get_or_create(&ReasonLabel { reason }).set(n as i64);
        }
        let failure =
            (!problems.is_empty()).then(|| problems.iter().map(|p| format!("self-check: {p}\n")).collect::<String>());
        if let Ok(mut last) = self.self_check_failure.lock() {
            *last = failure;
        }
    }

    /// What the last self-check found wrong, if anything.
    pub(crate) fn self_check_failure(&self) -> Option<String> {
        self.self_check_failure.lock().ok().and_then(|f| f.clone())
    }

    /// A batch was programmed at `now`, `took` after it started, carrying
    /// `changes`.
    pub(crate) fn synced(&self, changes: &crate::controller::Changes, took: Duration, now: SystemTime) {
        self.sync_duration.observe(took.as_secs_f64());
        self.sync_last.set(unix_seconds(now));
        self.endpoint_changes_total.inc_by(changes.endpoints);
        self.service_changes_total.inc_by(changes.services);
        self.endpoint_changes_pending.set(0);
        self.service_changes_pending.set(0);
        for at in &changes.trigger_times {
            // A trigger time ahead of this clock (skew) counts as zero.
            self.network_programming.observe(now.duration_since(*at).map_or(0.0, |d| d.as_secs_f64()));
        }
    }

    /// Changes received that wait (for the first sync).
    pub(crate) fn set_pending_changes(&self, changes: &crate::controller::Changes) {
        self.endpoint_changes_pending.set(changes.endpoints as i64);
        self.service_changes_pending.set(changes.services as i64);
    }

    /// A change was queued at `at` (wall clock).
    pub(crate) fn set_last_queued(&self, at: Option<SystemTime>) {
        if let Some(at) = at {
            self.sync_last_queued.set(unix_seconds(at));
        }
    }

    /// The counter of undecodable objects of one kind (created at zero, so
    /// the series exists before the first one).
    pub(crate) fn undecodable(&self, kind: &'static str) -> Counter {
        self.undecodable.get_or_create(&KindLabel { kind }).clone()
    }

    /// Sets the refused-Services gauges from the reasons of every waiting
    /// Service.
    pub(crate) fn set_refused<'a>(&self, reasons: impl Iterator<Item = &'a crate::dataplane::writer::Refusal>) {
        let mut counts: std::collections::BTreeMap<&'static str, i64> =
            crate::dataplane::writer::Refusal::LABELS.iter().map(|l| (*l, 0)).collect();
        for reason in reasons {
            *counts.entry(reason.label()).or_default() += 1;
        }
        for (reason, count) in counts {
            self.refused.get_or_create(&ReasonLabel { reason }).set(count);
        }
    }

    /// Counts `n` UDP-reset failures of one reason ([`UDP_RESET_FAILURES`]).
    /// Adds `n` to the north-south counter of `ns_stat` slot `slot`.
    pub(crate) fn north_south(&self, slot: u32, n: u64) {
        use svc_common::ns_stat;
        let Some(&name) = ns_stat::NAMES.get(slot as usize) else { return };
        match slot {
            ns_stat::NEW_FLOW | ns_stat::TRANSLATED | ns_stat::UNTRACKED => {
                self.ns_packets.get_or_create(&ResultLabel { result: name }).inc_by(n)
            }
            _ => self.ns_drops.get_or_create(&ReasonLabel { reason: name }).inc_by(n),
        };
    }

    pub(crate) fn udp_reset_failed(&self, reason: &'static str, n: u64) {
        self.udp_reset_failures.get_or_create(&ReasonLabel { reason }).inc_by(n);
    }

    /// Marks the first complete state as programmed.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the first complete state is programmed.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            // Writing into a String cannot fail; say so if it ever does.
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }
}

/// Serves the endpoints on `addr` until the runtime stops.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::io(format!("binding {addr}"), e))?;
    tracing::info!(%addr, "serving /metrics, /readyz and /healthz");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. EMFILE: retrying at once would spin.
                    tracing::debug!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, health) = (Arc::clone(&metrics), Arc::clone(&health));
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, Arc::clone(&metrics), Arc::clone(&health)));
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    // A client that hangs up early; nothing to do.
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" => match health.check(std::time::Instant::now()) {
            Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
            Err(waited) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("a change has waited {:.1} s without being programmed\n", waited.as_secs_f64()),
            ),
        },
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/readyz" => match (metrics.is_ready(), metrics.self_check_failure()) {
            (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not synced yet\n".to_owned()),
            (true, Some(failure)) => (StatusCode::SERVICE_UNAVAILABLE, failure),
            (true, None) => (StatusCode::OK, "ok\n".to_owned()),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Changes;

    /// A self-check's findings: the gauges, the counter and /readyz's text.
    #[test]
    fn self_check_findings_are_exported() {
        use crate::dataplane::self_check::Problem;
        let m = Metrics::new();
        m.self_checked(&[]);
        assert!(m.self_check_failure().is_none());
        let problems = [
            Problem::NotAttached { program: "svc_connect4", id: 7, cgroup: "/cg".into(), attached: vec![] },
            Problem::Probe("refused".into()),
        ];
        m.self_checked(&problems);
        let text = m.encode();
        for line in [
            "svc_agent_self_check_ok 0",
            "svc_agent_self_check_problems{reason=\"not_attached\"} 1",
            "svc_agent_self_check_problems{reason=\"probe\"} 1",
            "svc_agent_self_check_problems{reason=\"pin_mismatch\"} 0",
            "svc_agent_self_checks_total 2",
            "# TYPE svc_agent_self_check_ok gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let failure = m.self_check_failure().unwrap();
        assert!(failure.contains("svc_connect4") && failure.contains("refused"), "{failure}");
        m.self_checked(&[]);
        assert!(m.self_check_failure().is_none() && m.encode().contains("svc_agent_self_check_ok 1"));
    }

    /// Each north-south counter slot lands in its family and label.
    #[test]
    fn north_south_counters_by_slot() {
        use svc_common::ns_stat;
        let m = Metrics::new();
        m.north_south(ns_stat::NEW_FLOW, 3);
        m.north_south(ns_stat::UNTRACKED, 2);
        m.north_south(ns_stat::DROP_SOURCE_RANGE, 5);
        m.north_south(ns_stat::COUNT, 7);
        let text = m.encode();
        for line in [
            "svc_agent_north_south_packets_total{result=\"new_flow\"} 3",
            "svc_agent_north_south_packets_total{result=\"untracked\"} 2",
            "svc_agent_north_south_drops_total{reason=\"source_range\"} 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(" 7\n"), "an unknown slot is ignored");
    }

    /// The kube-proxy families exist under the agent's prefix with
    /// kube-proxy's types, and a change observed `d` after its trigger time
    /// lands in the bucket of `d`.
    #[test]
    fn kube_proxy_families_and_buckets() {
        let m = Metrics::new();
        let text = m.encode();
        for (name, kind) in [
            ("svc_agent_network_programming_duration_seconds", "histogram"),
            ("svc_agent_sync_proxy_rules_duration_seconds", "histogram"),
            ("svc_agent_sync_proxy_rules_last_timestamp_seconds", "gauge"),
            ("svc_agent_sync_proxy_rules_last_queued_timestamp_seconds", "gauge"),
            ("svc_agent_sync_proxy_rules_endpoint_changes", "counter"),
            ("svc_agent_sync_proxy_rules_endpoint_changes_pending", "gauge"),
            ("svc_agent_sync_proxy_rules_service_changes", "counter"),
            ("svc_agent_sync_proxy_rules_service_changes_pending", "gauge"),
            ("svc_agent_refused_services", "gauge"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind} missing:\n{text}");
        }
        let now = SystemTime::now();
        let changes = Changes {
            services: 1,
            endpoints: 2,
            trigger_times: vec![now - Duration::from_millis(3_400), now + Duration::from_secs(5)],
        };
        m.synced(&changes, Duration::from_millis(3), now);
        let text = m.encode();
        let bucket = |le: &str| {
            let line = format!("svc_agent_network_programming_duration_seconds_bucket{{le=\"{le}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&line)).map(|v| v.parse::<u64>().unwrap())
        };
        // 3.4 s: above le=3, within le=4; the skewed one counts as 0 s.
        assert_eq!((bucket("0.25"), bucket("3.0"), bucket("4.0")), (Some(1), Some(1), Some(2)), "{text}");
        assert!(text.contains("svc_agent_sync_proxy_rules_endpoint_changes_total 2\n"), "{text}");
        assert!(text.contains("svc_agent_sync_proxy_rules_service_changes_total 1\n"), "{text}");
    }
}
