//! YAML for the manifests the tests feed the agent, written the way people
//! write them by hand (`clusterIP` only, ports in the usual order), so the
//! agent's real YAML path is exercised. One writer per kind:
//! [`ServiceSpec::yaml`] and [`endpoint_slice_spec`]; [`service`] and
//! [`endpoint_slice`] are shorthands over them for the common cases.

use std::net::{IpAddr, Ipv4Addr};

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
/// makes it headless. Shorthand for a [`ServiceSpec`], which writes the YAML.
pub fn service(namespace: &str, name: &str, cluster_ip: Option<&str>, ports: &[SvcPort<'_>]) -> String {
    let mut spec = ServiceSpec::new(namespace, name).type_("ClusterIP");
    if let Some(ip) = cluster_ip {
        spec = spec.cluster_ip(ip);
    }
    for p in ports {
        spec = spec.port(PortSpec {
            name: p.name.to_owned(),
            protocol: p.protocol.to_owned(),
            port: p.port,
            target_port: p.target_port.to_owned(),
            node_port: None,
        });
    }
    spec.yaml()
}

/// An IPv4 EndpointSlice of Service `service` (label
/// `kubernetes.io/service-name`). Shorthand for [`endpoint_slice_spec`],
/// which writes the YAML.
pub fn endpoint_slice(
    namespace: &str,
    slice_name: &str,
    service: &str,
    ports: &[SlicePort<'_>],
    endpoints: &[Endpoint],
) -> String {
    let specs: Vec<EndpointSpec> = endpoints
        .iter()
        .map(|e| {
            let spec = EndpointSpec::new(e.ip);
            match e.ready {
                Some(ready) => spec.ready(ready),
                None => spec,
            }
        })
        .collect();
    endpoint_slice_spec(namespace, slice_name, service, ports, &specs)
}

/// Joins manifests into one multi-document YAML file.
pub fn multi(docs: &[&str]) -> String {
    docs.iter().map(|d| format!("---\n{d}")).collect()
}

/// One port of a [`ServiceSpec`]: [`SvcPort`]'s fields, plus `nodePort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Empty: no `name` field.
    pub name: String,
    pub protocol: String,
    pub port: u16,
    /// Written unquoted, as in [`SvcPort`].
    pub target_port: String,
    pub node_port: Option<u16>,
}

impl PortSpec {
    pub fn tcp(name: &str, port: u16, target_port: &str) -> Self {
        Self {
            name: name.to_owned(),
            protocol: "TCP".to_owned(),
            port,
            target_port: target_port.to_owned(),
            node_port: None,
        }
    }

    pub fn udp(name: &str, port: u16, target_port: &str) -> Self {
        Self { protocol: "UDP".to_owned(), ..Self::tcp(name, port, target_port) }
    }

    /// Sets `nodePort` (NodePort and LoadBalancer Services).
    #[must_use]
    pub fn node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// `spec.sessionAffinity` of a [`ServiceSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Field left out (Kubernetes defaults it to `None`).
    Unset,
    /// `sessionAffinity: None`, written out.
    None,
    /// `sessionAffinity: ClientIP`, with `timeoutSeconds` when given.
    ClientIp(Option<u32>),
}

/// A Service with every field the Service-semantics tests vary, rendered as
/// hand-written YAML by [`Self::yaml`]. Selector `app: NAME`, as [`service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// `spec.type`; `None` leaves it out (ClusterIP).
    pub type_: Option<String>,
    /// `spec.clusterIP`; `None` leaves it out, `"None"` is headless.
    pub cluster_ip: Option<String>,
    /// `spec.clusterIPs` (empty: left out).
    pub cluster_ips: Vec<String>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<String>,
    /// `spec.ipFamilies` (empty: left out).
    pub ip_families: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<PortSpec>,
    pub affinity: Affinity,
    pub internal_traffic_policy: Option<String>,
    pub external_traffic_policy: Option<String>,
    pub traffic_distribution: Option<String>,
    pub external_ips: Vec<String>,
    /// `status.loadBalancer.ingress[]`: (ip, ipMode).
    pub lb_ingress: Vec<(String, Option<String>)>,
    /// `spec.externalName` (type ExternalName).
    pub external_name: Option<String>,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
    /// `spec.loadBalancerSourceRanges`.
    pub lb_source_ranges: Vec<String>,
}

impl ServiceSpec {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            type_: None,
            cluster_ip: None,
            cluster_ips: Vec::new(),
            ip_family_policy: None,
            ip_families: Vec::new(),
            labels: Vec::new(),
            ports: Vec::new(),
            affinity: Affinity::Unset,
            internal_traffic_policy: None,
            external_traffic_policy: None,
            traffic_distribution: None,
            external_ips: Vec::new(),
            lb_ingress: Vec::new(),
            external_name: None,
            health_check_node_port: None,
            lb_source_ranges: Vec::new(),
        }
    }

    #[must_use]
    pub fn lb_source_range(mut self, cidr: &str) -> Self {
        self.lb_source_ranges.push(cidr.to_owned());
        self
    }

    #[must_use]
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.health_check_node_port = Some(port);
        self
    }

    #[must_use]
    pub fn type_(mut self, type_: &str) -> Self {
        self.type_ = Some(type_.to_owned());
        self
    }

    #[must_use]
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.cluster_ip = Some(ip.to_owned());
        self
    }

    /// `spec.clusterIPs` (and `spec.clusterIP`, the first), one per
    /// family: a dual-stack Service.
    #[must_use]
    pub fn cluster_ips(mut self, ips: &[&str]) -> Self {
        self.cluster_ip = ips.first().map(|ip| (*ip).to_owned());
        self.cluster_ips = ips.iter().map(|ip| (*ip).to_owned()).collect();
        self
    }

    /// `spec.ipFamilyPolicy` and `spec.ipFamilies`.
    #[must_use]
    pub fn ip_families(mut self, policy: &str, families: &[&str]) -> Self {
        self.ip_family_policy = Some(policy.to_owned());
        self.ip_families = families.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn port(mut self, port: PortSpec) -> Self {
        self.ports.push(port);
        self
    }

    #[must_use]
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = affinity;
        self
    }

    #[must_use]
    pub fn internal_traffic_policy(mut self, policy: &str) -> Self {
        self.internal_traffic_policy = Some(policy.to_owned());
        self
    }

    #[must_use]
    pub fn external_traffic_policy(mut self, policy: &str) -> Self {
        self.external_traffic_policy = Some(policy.to_owned());
        self
    }

    #[must_use]
    pub fn traffic_distribution(mut self, value: &str) -> Self {
        self.traffic_distribution = Some(value.to_owned());
        self
    }

    #[must_use]
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.external_ips.push(ip.to_owned());
        self
    }

    /// Adds `status.loadBalancer.ingress[]` `{ip, ipMode}`.
    #[must_use]
    pub fn lb_ingress(mut self, ip: &str, ip_mode: Option<&str>) -> Self {
        self.lb_ingress.push((ip.to_owned(), ip_mode.map(str::to_owned)));
        self
    }

    /// `type: ExternalName` with `externalName: NAME` (no cluster IP).
    #[must_use]
    pub fn external_name(mut self, name: &str) -> Self {
        self.type_ = Some("ExternalName".to_owned());
        self.cluster_ip = None;
        self.external_name = Some(name.to_owned());
        self
    }

    /// The Service as YAML.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\n",
            self.name, self.namespace
        );
        if !self.labels.is_empty() {
            y.push_str("  labels:\n");
            for (k, v) in &self.labels {
                y.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
        y.push_str("spec:\n");
        if let Some(t) = &self.type_ {
            y.push_str(&format!("  type: {t}\n"));
        }
        if let Some(ip) = &self.cluster_ip {
            y.push_str(&format!("  clusterIP: \"{ip}\"\n"));
        }
        if !self.cluster_ips.is_empty() {
            let ips: Vec<String> = self.cluster_ips.iter().map(|ip| format!("\"{ip}\"")).collect();
            y.push_str(&format!("  clusterIPs: [{}]\n", ips.join(", ")));
        }
        if let Some(policy) = &self.ip_family_policy {
            y.push_str(&format!("  ipFamilyPolicy: {policy}\n"));
        }
        if !self.ip_families.is_empty() {
            y.push_str(&format!("  ipFamilies: [{}]\n", self.ip_families.join(", ")));
        }
        if let Some(name) = &self.external_name {
            y.push_str(&format!("  externalName: {name}\n"));
        } else {
            y.push_str(&format!("  selector:\n    app: {}\n", self.name));
        }
        match self.affinity {
            Affinity::Unset => {}
            Affinity::None => y.push_str("  sessionAffinity: None\n"),
            Affinity::ClientIp(None) => y.push_str("  sessionAffinity: ClientIP\n"),
            Affinity::ClientIp(Some(t)) => {
                y.push_str(&format!(
                    "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {t}\n"
                ));
            }
        }
        for (field, value) in [
            ("internalTrafficPolicy", &self.internal_traffic_policy),
            ("externalTrafficPolicy", &self.external_traffic_policy),
            ("trafficDistribution", &self.traffic_distribution),
        ] {
            if let Some(v) = value {
                y.push_str(&format!("  {field}: {v}\n"));
            }
        }
        if !self.lb_source_ranges.is_empty() {
            y.push_str("  loadBalancerSourceRanges:\n");
            for cidr in &self.lb_source_ranges {
                y.push_str(&format!("  - \"{cidr}\"\n"));
            }
        }
        if let Some(port) = self.health_check_node_port {
            y.push_str(&format!("  healthCheckNodePort: {port}\n"));
        }
        if !self.external_ips.is_empty() {
            y.push_str("  externalIPs:\n");
            for ip in &self.external_ips {
                y.push_str(&format!("  - \"{ip}\"\n"));
            }
        }
        if !self.ports.is_empty() {
            y.push_str("  ports:\n");
        }
        for p in &self.ports {
            y.push_str("  -");
            if !p.name.is_empty() {
                y.push_str(&format!(" name: {}\n   ", p.name));
            }
            y.push_str(&format!(
                " protocol: {}\n    port: {}\n    targetPort: {}\n",
                p.protocol, p.port, p.target_port
            ));
            if let Some(np) = p.node_port {
                y.push_str(&format!("    nodePort: {np}\n"));
            }
        }
        if !self.lb_ingress.is_empty() {
            y.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for (ip, mode) in &self.lb_ingress {
                y.push_str(&format!("    - ip: \"{ip}\"\n"));
                if let Some(mode) = mode {
                    y.push_str(&format!("      ipMode: {mode}\n"));
                }
            }
        }
        y
    }
}

/// One endpoint of [`endpoint_slice_spec`], with every field the model
/// reads; a condition left `None` is left out of the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// IPv4 or IPv6 (a slice holds one family: [`endpoint_slice_spec`]).
    pub ip: IpAddr,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub hints: Option<Vec<String>>,
}

impl EndpointSpec {
    /// No conditions at all (counts as ready).
    pub fn new(ip: impl Into<IpAddr>) -> Self {
        Self { ip: ip.into(), ready: None, serving: None, terminating: None, node_name: None, zone: None, hints: None }
    }

    #[must_use]
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = Some(ready);
        self
    }

    #[must_use]
    pub fn serving(mut self, serving: bool) -> Self {
        self.serving = Some(serving);
        self
    }

    #[must_use]
    pub fn terminating(mut self, terminating: bool) -> Self {
        self.terminating = Some(terminating);
        self
    }

    /// `ready: false, serving: true, terminating: true`: a Pod shutting
    /// down gracefully that still serves.
    #[must_use]
    pub fn terminating_serving(self) -> Self {
        self.ready(false).serving(true).terminating(true)
    }

    #[must_use]
    pub fn node(mut self, node_name: &str) -> Self {
        self.node_name = Some(node_name.to_owned());
        self
    }

    #[must_use]
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }

    #[must_use]
    pub fn hints(mut self, zones: &[&str]) -> Self {
        self.hints = Some(zones.iter().map(|z| (*z).to_owned()).collect());
        self
    }
}

/// An EndpointSlice, as [`endpoint_slice`], from [`EndpointSpec`]s: of
/// `addressType: IPv6` when its first endpoint is IPv6, else IPv4.
pub fn endpoint_slice_spec(
    namespace: &str,
    slice_name: &str,
    service: &str,
    ports: &[SlicePort<'_>],
    endpoints: &[EndpointSpec],
) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice_name}\n  namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: {}\n",
        if endpoints.first().is_some_and(|e| e.ip.is_ipv6()) { "IPv6" } else { "IPv4" }
    );
    if ports.is_empty() {
        y.push_str("ports: []\n");
    } else {
        y.push_str("ports:\n");
    }
    for p in ports {
        y.push_str(&format!("- name: \"{}\"\n  protocol: {}\n  port: {}\n", p.name, p.protocol, p.port));
    }
    if endpoints.is_empty() {
        y.push_str("endpoints: []\n");
    } else {
        y.push_str("endpoints:\n");
    }
    for e in endpoints {
        y.push_str(&format!("- addresses: [\"{}\"]\n", e.ip));
        let conditions: Vec<String> = [("ready", e.ready), ("serving", e.serving), ("terminating", e.terminating)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
            .collect();
        if !conditions.is_empty() {
            y.push_str(&format!("  conditions: {{{}}}\n", conditions.join(", ")));
        }
        if let Some(node) = &e.node_name {
            y.push_str(&format!("  nodeName: {node}\n"));
        }
        if let Some(zone) = &e.zone {
            y.push_str(&format!("  zone: {zone}\n"));
        }
        if let Some(zones) = &e.hints {
            let names: Vec<String> = zones.iter().map(|z| format!("{{name: {z}}}")).collect();
            y.push_str(&format!("  hints:\n    forZones: [{}]\n", names.join(", ")));
        }
    }
    y
}

/// The socket-translation opt-out annotation (`svc.dataplane.io/socket-lb`).
pub const SOCKET_LB: &str = "svc.dataplane.io/socket-lb";

/// A Pod on node `node` with `metadata.uid` `uid` (the manifest source's
/// stand-in for the uid an API server assigns: the API server harness
/// drops it) and, if given, the opt-out annotation's value. Its spec is
/// only what the API server's validation and admission need.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, socket_lb: Option<&str>) -> String {
    let annotations = socket_lb.map_or_else(String::new, |v| format!("\n  annotations:\n    {SOCKET_LB}: {v}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  uid: {uid}{annotations}\n\
         spec:\n  nodeName: {node}\n  automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: pause\n"
    )
}

/// A Namespace with, if given, the opt-out annotation's value.
pub fn namespace(name: &str, socket_lb: Option<&str>) -> String {
    let annotations = socket_lb.map_or_else(String::new, |v| format!("\n  annotations:\n    {SOCKET_LB}: {v}"));
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{annotations}\n")
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

    #[test]
    fn service_spec_yaml_has_the_kubernetes_shape() {
        let yaml = ServiceSpec::new("default", "web")
            .type_("LoadBalancer")
            .cluster_ip("10.96.1.10")
            .label("service.kubernetes.io/headless", "")
            .port(PortSpec::tcp("http", 80, "8080").node_port(30080))
            .port(PortSpec::udp("", 53, "dns"))
            .affinity(Affinity::ClientIp(Some(2)))
            .internal_traffic_policy("Local")
            .external_traffic_policy("Local")
            .traffic_distribution("PreferClose")
            .external_ip("203.0.113.20")
            .lb_ingress("203.0.113.10", None)
            .lb_ingress("203.0.113.11", Some("Proxy"))
            .yaml();
        let svc = &parse(&yaml)[0];
        assert_eq!(svc["metadata"]["labels"], json!({"service.kubernetes.io/headless": ""}));
        let spec = &svc["spec"];
        assert_eq!(spec["type"], json!("LoadBalancer"));
        assert_eq!(spec["clusterIP"], json!("10.96.1.10"));
        assert_eq!(spec["selector"], json!({"app": "web"}));
        assert_eq!(spec["sessionAffinity"], json!("ClientIP"));
        assert_eq!(spec["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 2}}));
        assert_eq!(spec["internalTrafficPolicy"], json!("Local"));
        assert_eq!(spec["externalTrafficPolicy"], json!("Local"));
        assert_eq!(spec["trafficDistribution"], json!("PreferClose"));
        assert_eq!(spec["externalIPs"], json!(["203.0.113.20"]));
        assert_eq!(
            spec["ports"],
            json!([
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"protocol": "UDP", "port": 53, "targetPort": "dns"},
            ])
        );
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "203.0.113.10"}, {"ip": "203.0.113.11", "ipMode": "Proxy"}])
        );

        let off = parse(&ServiceSpec::new("default", "a").affinity(Affinity::None).yaml());
        assert_eq!(off[0]["spec"]["sessionAffinity"], json!("None"));
        let name = parse(&ServiceSpec::new("default", "x").external_name("db.example.com").yaml());
        assert_eq!(name[0]["spec"]["type"], json!("ExternalName"));
        assert_eq!(name[0]["spec"]["externalName"], json!("db.example.com"));
        assert!(name[0]["spec"].get("selector").is_none());
    }

    #[test]
    fn endpoint_spec_yaml_has_the_kubernetes_shape() {
        let ip = Ipv4Addr::new(10, 244, 1, 2);
        let yaml = endpoint_slice_spec(
            "default",
            "web-1",
            "web",
            &[SlicePort::tcp("http", 8080)],
            &[
                EndpointSpec::new(ip),
                EndpointSpec::new(ip).terminating_serving().node("n1").zone("z1").hints(&["z1", "z2"]),
            ],
        );
        let slice = &parse(&yaml)[0];
        assert_eq!(
            slice["endpoints"],
            json!([
                {"addresses": ["10.244.1.2"]},
                {
                    "addresses": ["10.244.1.2"],
                    "conditions": {"ready": false, "serving": true, "terminating": true},
                    "nodeName": "n1",
                    "zone": "z1",
                    "hints": {"forZones": [{"name": "z1"}, {"name": "z2"}]},
                },
            ])
        );
        let empty = parse(&endpoint_slice_spec("default", "e", "e", &[], &[]));
        assert_eq!(empty[0]["endpoints"], json!([]));
        assert_eq!(empty[0]["ports"], json!([]));
    }
}
