//! The Service + EndpointSlice manifests the agent's `--source DIR` reads:
//! the same Services the iptables and nftables layouts are generated from.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};

use crate::addressing::{NAMESPACE, PORT_NAME, ServiceSpec, Topology, churn_backend, service_name, twin6};

/// Services per file: a change rewrites (and the agent re-parses) one
/// small file, as with one manifest per application.
const PER_FILE: usize = 100;

/// Writes every Service of `topo` into `dir` (which must exist), returns the
/// number of bytes written. `dual_stack`: every Service is
/// RequireDualStack with the IPv6 twin of its address as second cluster
/// IP, and gets a second (IPv6) slice with the twins of its endpoints.
pub(crate) fn write_all(dir: &Path, topo: &Topology, dual_stack: bool) -> Result<u64> {
    write_services(dir, &topo.all().collect::<Vec<_>>(), dual_stack)
}

/// Writes `services` into `dir` as [`write_all`] does (a Service with a
/// node port is of type NodePort).
pub(crate) fn write_services(dir: &Path, services: &[ServiceSpec], dual_stack: bool) -> Result<u64> {
    let mut total = 0u64;
    for (n, chunk) in services.chunks(PER_FILE).enumerate() {
        let mut text = String::with_capacity(chunk.len() * if dual_stack { 1400 } else { 700 });
        for svc in chunk {
            service_yaml(&mut text, svc, dual_stack);
            slice_yaml(&mut text, &svc.name, &format!("{}-a", svc.name), svc, false);
            if dual_stack {
                slice_yaml(&mut text, &svc.name, &format!("{}-b", svc.name), svc, true);
            }
        }
        let path = dir.join(format!("services-{n:05}.yaml"));
        std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
        total += text.len() as u64;
    }
    Ok(total)
}

/// Change number `k`: a new EndpointSlice adding one endpoint to service
/// `i`, written to a hidden temporary name (the agent skips hidden files)
/// and renamed into place, so the agent never reads half a file.
/// Returns the final path (the rename is the caller's, to time it).
pub(crate) fn churn_file(
    dir: &Path,
    topo: &Topology,
    i: u32,
    k: u32,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let mut svc = topo.service(i);
    svc.backends = vec![std::net::SocketAddrV4::new(churn_backend(k), svc.backends[0].port())];
    let mut text = String::new();
    slice_yaml(&mut text, &service_name(i), &format!("{}-churn-{k}", svc.name), &svc, false);
    let tmp = dir.join(format!(".churn-{k}.yaml.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    Ok((tmp, dir.join(format!("churn-{k:05}.yaml"))))
}

fn service_yaml(out: &mut String, svc: &ServiceSpec, dual_stack: bool) {
    let target = svc.backends.first().map_or(svc.port, std::net::SocketAddrV4::port);
    let families = if dual_stack {
        format!(
            "  clusterIPs: [{vip}, \"{vip6}\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n",
            vip = svc.vip,
            vip6 = twin6(svc.vip)
        )
    } else {
        String::new()
    };
    let (kind, node_port) = match svc.node_port {
        Some(p) => ("  type: NodePort\n", format!(", nodePort: {p}")),
        None => ("", String::new()),
    };
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n{kind}  \
         clusterIP: {vip}\n{families}  selector: {{app: {name}}}\n  ports:\n  - {{name: {PORT_NAME}, port: {port}, \
         protocol: {proto}, targetPort: {target}{node_port}}}\n---\n",
        name = svc.name,
        vip = svc.vip,
        port = svc.port,
        proto = svc.proto.upper(),
    );
}

/// One EndpointSlice with every backend of `svc`, IPv4 or (`ipv6`) the
/// IPv6 twins.
fn slice_yaml(out: &mut String, service: &str, slice: &str, svc: &ServiceSpec, ipv6: bool) {
    let port = svc.backends.first().map_or(svc.port, std::net::SocketAddrV4::port);
    let _ = write!(
        out,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: \
         {NAMESPACE}\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: {family}\nports: [{{name: \
         {PORT_NAME}, port: {port}, protocol: {proto}}}]\nendpoints:\n",
        family = if ipv6 { "IPv6" } else { "IPv4" },
        proto = svc.proto.upper(),
    );
    for b in &svc.backends {
        if ipv6 {
            let _ = writeln!(out, "- {{addresses: [\"{}\"], conditions: {{ready: true}}}}", twin6(*b.ip()));
        } else {
            let _ = writeln!(out, "- {{addresses: [{}], conditions: {{ready: true}}}}", b.ip());
        }
    }
    out.push_str("---\n");
}
