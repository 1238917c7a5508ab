//! YAML for the manifests the tests feed the agent, written the way people
//! write them by hand (`clusterIP` only, ports in the usual order), so the
//! agent's real YAML path is exercised.

use std::{fmt::Write as _, net::Ipv4Addr};

/// One entry of a Service's `spec.ports`.
#[derive(Debug, Clone, Copy)]
pub struct SvcPort<'a> {
    /// Empty: no `name` field (allowed for single-port Services).
    pub name: &'a str,
    pub protocol: &'a str,
    pub port: u16,
    /// Written unquoted, so "8080" is a number and "http" a port name, as
    /// Kubernetes' IntOrString reads them.
    pub target_port: &'a str,
}

impl<'a> SvcPort<'a> {
    pub fn tcp(name: &'a str, port: u16, target_port: &'a str) -> Self {
        Self { name, protocol: "TCP", port, target_port }
    }

    pub fn udp(name: &'a str, port: u16, target_port: &'a str) -> Self {
        Self { name, protocol: "UDP", port, target_port }
    }
}

/// One entry of an EndpointSlice's `ports`.
#[derive(Debug, Clone, Copy)]
pub struct SlicePort<'a> {
    pub name: &'a str,
    pub protocol: &'a str,
    pub port: u16,
}

impl<'a> SlicePort<'a> {
    pub fn tcp(name: &'a str, port: u16) -> Self {
        Self { name, protocol: "TCP", port }
    }

    pub fn udp(name: &'a str, port: u16) -> Self {
        Self { name, protocol: "UDP", port }
    }
}

/// One endpoint of a slice; `ready: None` leaves `conditions` out (counts as
/// ready).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub ready: Option<bool>,
}

impl Endpoint {
    pub fn ready(ip: Ipv4Addr) -> Self {
        Self { ip, ready: Some(true) }
    }

    pub fn not_ready(ip: Ipv4Addr) -> Self {
        Self { ip, ready: Some(false) }
    }
}

/// A `type: ClusterIP` Service with selector `app: NAME`. `cluster_ip`:
/// `None` leaves `clusterIP` out (the agent allocates one); `Some("None")`
/// makes it headless.
pub fn service(namespace: &str, name: &str, cluster_ip: Option<&str>, ports: &[SvcPort<'_>]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  type: ClusterIP\n"
    );
    if let Some(ip) = cluster_ip {
        let _ = writeln!(y, "  clusterIP: {ip}");
    }
    let _ = write!(y, "  selector:\n    app: {name}\n  ports:\n");
    for p in ports {
        y.push_str("  -");
        if !p.name.is_empty() {
            let _ = write!(y, " name: {}\n   ", p.name);
        }
        let _ = writeln!(y, " protocol: {}\n    port: {}\n    targetPort: {}", p.protocol, p.port, p.target_port);
    }
    y
}

/// An IPv4 EndpointSlice of Service `service` (label
/// `kubernetes.io/service-name`).
pub fn endpoint_slice(
    namespace: &str,
    slice_name: &str,
    service: &str,
    ports: &[SlicePort<'_>],
    endpoints: &[Endpoint],
) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice_name}\n  namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n"
    );
    for p in ports {
        let _ = writeln!(y, "- name: \"{}\"\n  protocol: {}\n  port: {}", p.name, p.protocol, p.port);
    }
    y.push_str("endpoints:\n");
    for e in endpoints {
        let _ = writeln!(y, "- addresses: [\"{}\"]", e.ip);
        if let Some(ready) = e.ready {
            let _ = writeln!(y, "  conditions:\n    ready: {ready}");
        }
    }
    if ports.is_empty() {
        y = y.replace("ports:\n", "ports: []\n");
    }
    if endpoints.is_empty() {
        // `endpoints: []` rather than a dangling key (which would be null).
        y = y.replace("endpoints:\n", "endpoints: []\n");
    }
    y
}

/// Joins manifests into one multi-document YAML file.
pub fn multi(docs: &[&str]) -> String {
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(yaml: &str) -> Vec<Value> {
        yaml.split("\n---\n")
            .map(|d| d.trim_start_matches("---\n"))
            .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }

    #[test]
    fn service_yaml_has_the_kubernetes_shape() {
        let docs = parse(&service(
            "default",
            "web",
            Some("10.96.0.10"),
            &[SvcPort::tcp("", 80, "8080"), SvcPort::udp("dns", 53, "dns")],
        ));
        let spec = &docs[0]["spec"];
        assert_eq!(spec["clusterIP"], json!("10.96.0.10"));
        assert_eq!(
            spec["ports"],
            json!([
                {"protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": "dns"},
            ])
        );
        let auto = parse(&service("default", "a", None, &[SvcPort::tcp("", 80, "80")]));
        assert!(auto[0]["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn slice_yaml_has_the_kubernetes_shape() {
        let ip = Ipv4Addr::new(10, 244, 1, 2);
        let yaml = multi(&[&endpoint_slice(
            "default",
            "web-1",
            "web",
            &[SlicePort::tcp("", 8080)],
            &[Endpoint::ready(ip), Endpoint::not_ready(ip), Endpoint { ip, ready: None }],
        )]);
        let slice = &parse(&yaml)[0];
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], json!("web"));
        assert_eq!(slice["addressType"], json!("IPv4"));
        assert_eq!(slice["ports"], json!([{"name": "", "protocol": "TCP", "port": 8080}]));
        assert_eq!(
            slice["endpoints"],
            json!([
                {"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.2"]},
            ])
        );
        let empty = parse(&endpoint_slice("default", "e", "e", &[], &[]));
        assert_eq!(empty[0]["endpoints"], json!([]));
    }
}
