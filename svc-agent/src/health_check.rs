//! `healthCheckNodePort` servers, as kube-proxy runs them for Services
//! with `externalTrafficPolicy: Local`: a load balancer probes
//! `nodeIP:healthCheckNodePort` and sends traffic only to nodes that
//! answer 200. The answer is kube-proxy's: 200 when this node has a ready
//! local endpoint (terminating ones do not count, as upstream's "should
//! fail health check node port if there are only terminating endpoints"
//! requires), 503 otherwise, with the count in a JSON body and in
//! `X-Load-Balancing-Endpoint-Weight`.
//!
//! The controller sends the whole wanted set after each batch that changed
//! it; this task opens and closes one listener per port to match.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, RwLock},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{sync::watch, task::JoinHandle};

use crate::model::{HealthCheck, ServiceKey};

/// Every health check this node serves, by Service.
pub(crate) type HealthChecks = BTreeMap<ServiceKey, HealthCheck>;

/// What each port answers: the Service and its local ready endpoints.
type Answers = Arc<RwLock<HashMap<u16, (ServiceKey, u32)>>>;

/// How long a port that could not be bound (held by another process,
/// e.g. a kube-proxy being replaced) waits before the next attempt.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the task that keeps the listeners equal to what `wanted` says.
pub(crate) fn spawn(mut wanted: watch::Receiver<HealthChecks>) {
    tokio::spawn(async move {
        let answers: Answers = Arc::default();
        let mut listeners: HashMap<u16, JoinHandle<()>> = HashMap::new();
        loop {
            let checks = wanted.borrow_and_update().clone();
            let all_bound = reconcile(&by_port(&checks), &answers, &mut listeners).await;
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(BIND_RETRY), if !all_bound => {}
            }
        }
    });
}

/// Publishes the answers and opens and closes listeners to match;
/// returns whether every port is served.
async fn reconcile(
    by_port: &HashMap<u16, (ServiceKey, u32)>,
    answers: &Answers,
    listeners: &mut HashMap<u16, JoinHandle<()>>,
) -> bool {
    if let Ok(mut a) = answers.write() {
        a.clone_from(by_port);
    }
    let closed: Vec<u16> = listeners.keys().filter(|p| !by_port.contains_key(p)).copied().collect();
    for port in closed {
        if let Some(task) = listeners.remove(&port) {
            task.abort();
            // Wait until the listener is gone, so the port is free again
            // for a Service that takes it next.
            drop(task.await);
            tracing::info!(port, "health check node port closed");
        }
    }
    let mut all_bound = true;
    for (port, (service, _)) in by_port {
        if listeners.contains_key(port) {
            continue;
        }
        match listen(*port) {
            Ok(listener) => {
                tracing::info!(port, service = %service, "serving health check node port");
                listeners.insert(*port, tokio::spawn(serve(listener, *port, Arc::clone(answers))));
            }
            Err(e) => {
                all_bound = false;
                tracing::error!(port, service = %service, "health check node port: binding: {e} (retrying)");
            }
        }
    }
    all_bound
}

/// The answers by port; two Services on one port keep the first (by
/// name), with an error line.
fn by_port(checks: &HealthChecks) -> HashMap<u16, (ServiceKey, u32)> {
    let mut out: HashMap<u16, (ServiceKey, u32)> = HashMap::new();
    for (service, check) in checks {
        if let Some((owner, _)) = out.get(&check.node_port) {
            tracing::error!(
                port = check.node_port,
                "healthCheckNodePort {} of {service} is already {owner}'s; not served for {service}",
                check.node_port
            );
            continue;
        }
        out.insert(check.node_port, (service.clone(), check.local_endpoints));
    }
    out
}

/// A listener on every address of the node: one dual-stack socket
/// (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says), or IPv4 only
/// where the kernel has no IPv6.
fn listen(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::AsRawFd as _;
    let socket = match tokio::net::TcpSocket::new_v6() {
        Ok(socket) => {
            let off: libc::c_int = 0;
            // SAFETY: setsockopt with an int on a socket we own.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_V6ONLY,
                    (&raw const off).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
            socket
        }
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
            socket
        }
        Err(e) => return Err(e),
    };
    socket.listen(1024)
}

async fn serve(listener: tokio::net::TcpListener, port: u16, answers: Answers) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let answers = Arc::clone(&answers);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, port, Arc::clone(&answers)));
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("health check connection: {e}");
            }
        });
    }
}

async fn respond(
    _req: Request<hyper::body::Incoming>,
    port: u16,
    answers: Answers,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = answers.read().ok().and_then(|a| a.get(&port).cloned());
    let (status, body, count) = match answer {
        Some((service, count)) => {
            (if count > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body(&service, count), count)
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, String::new(), 0),
    };
    let response = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Load-Balancing-Endpoint-Weight", count.to_string())
        .body(Full::new(Bytes::from(body)));
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// kube-proxy's body.
fn body(service: &ServiceKey, count: u32) -> String {
    serde_json::json!({
        "service": { "namespace": service.namespace, "name": service.name },
        "localEndpoints": count,
        "serviceProxyHealthy": true,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_service_per_port() {
        let check = |node_port, local_endpoints| HealthCheck { node_port, local_endpoints };
        let checks: HealthChecks = [
            (ServiceKey::new("a", "one"), check(32000, 2)),
            (ServiceKey::new("b", "two"), check(32000, 0)),
            (ServiceKey::new("c", "three"), check(32001, 0)),
        ]
        .into();
        let ports = by_port(&checks);
        assert_eq!(ports.get(&32000), Some(&(ServiceKey::new("a", "one"), 2)));
        assert_eq!(ports.get(&32001), Some(&(ServiceKey::new("c", "three"), 0)));
        assert_eq!(
            body(&ServiceKey::new("a", "one"), 2),
            r#"{"localEndpoints":2,"service":{"name":"one","namespace":"a"},"serviceProxyHealthy":true}"#
        );
    }
}
