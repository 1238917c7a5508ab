//! Prometheus metrics and the readiness endpoint (`--metrics-addr`):
//! `GET /metrics`, `GET /readyz` (200 once the first complete state is
//! programmed, 503 before), `GET /healthz` (503 once a received change has
//! waited longer than `--healthz-timeout` unprogrammed: [`crate::health`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
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
    /// Services not (fully) programmed, by reason.
    refused: Family<ReasonLabel, Gauge>,
    /// Objects from the Kubernetes API that could not be decoded, by kind.
    undecodable: Family<KindLabel, Counter>,
    /// Connected UDP sockets reset because their backend was removed.
    pub udp_resets: Counter,
    /// What a UDP socket reset could not do, by reason.
    udp_reset_failures: Family<ReasonLabel, Counter>,
}

/// Reasons of `svc_agent_udp_reset_failures_total`.
pub(crate) const UDP_RESET_FAILURES: [&str; 4] = ["socket", "netns", "invisible_process", "cgroup"];

/// The `reason` label of refused Services ([`crate::dataplane::writer::Refusal::label`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
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
            refused: Family::default(),
            undecodable: Family::default(),
            udp_resets: Counter::default(),
            udp_reset_failures: Family::default(),
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
        Self { registry, ..m }
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
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
        "/readyz" if metrics.is_ready() => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not synced yet\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}
