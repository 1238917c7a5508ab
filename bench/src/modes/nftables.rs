//! kube-proxy's nftables layout, as `nft -f` input in the flat
//! `add ...` form knftables sends, following kubernetes
//! pkg/proxy/nftables/proxier.go (setupNFTables, syncProxyRules,
//! writeServiceToEndpointRules) for ClusterIP Services with
//! `--cluster-cidr` set, no session affinity, NodePort addresses
//! unrestricted:
//!
//! ```text
//! table ip kube-proxy
//!   nat-output (nat, output, dstnat) -> services:
//!     ip daddr . meta l4proto . th dport vmap @service-ips
//!   service-ips: VIP . tcp . P : goto service-HASH-ns/name/tcp/port
//!   service-...: ip daddr VIP tcp dport P ip saddr != clusterCIDR jump mark-for-masquerade
//!                numgen random mod n vmap { 0 : goto endpoint-..., ... }
//!   endpoint-...: ip saddr EP jump mark-for-masquerade ; meta l4proto tcp dnat to EP
//!   filter-output: ct state new jump endpoints-check / firewall-check (empty vmaps)
//! ```
//!
//! Difference: chain-name hashes are FNV-based instead of SHA-256 (same
//! shape: 8 base32 characters then the readable name).

use std::fmt::Write as _;

use crate::{
    addressing::{CLUSTER_CIDR, NAMESPACE, PORT_NAME, ServiceSpec},
    modes::chain_hash,
};

const TABLE: &str = "ip kube-proxy";
const MASQ_MARK: &str = "0x4000";

/// The whole ruleset for `services`.
pub(crate) fn ruleset(services: &[ServiceSpec]) -> String {
    let mut out =
        String::with_capacity(services.len() * (400 + 300 * services.first().map_or(1, |s| s.backends.len())));
    setup(&mut out);
    for svc in services {
        service(&mut out, svc);
    }
    out
}

fn setup(out: &mut String) {
    let _ = writeln!(out, "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}");
    // kube-proxy writes the priorities as `dstnat - 10`, `dstnat`, `srcnat`;
    // nft 1.0.6 accepts those names only on some hooks, so they are spelled
    // as their values (dstnat = -100, srcnat = 100): the same chains.
    for (name, ty, hook, prio) in [
        ("filter-prerouting", "filter", "prerouting", "-110"),
        ("filter-input", "filter", "input", "-110"),
        ("filter-forward", "filter", "forward", "-110"),
        ("filter-output", "filter", "output", "-110"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
    ] {
        let _ = writeln!(out, "add chain {TABLE} {name} {{ type {ty} hook {hook} priority {prio} ; }}");
    }
    for chain in ["endpoints-check", "firewall-check", "services", "masquerading", "mark-for-masquerade"] {
        let _ = writeln!(out, "add chain {TABLE} {chain}");
    }
    for (dst, src, extra) in [
        ("endpoints-check", "filter-input", "ct state new "),
        ("endpoints-check", "filter-forward", "ct state new "),
        ("endpoints-check", "filter-output", "ct state new "),
        ("firewall-check", "filter-prerouting", "ct state new "),
        ("firewall-check", "filter-output", "ct state new "),
        ("services", "nat-output", ""),
        ("services", "nat-prerouting", ""),
        ("masquerading", "nat-postrouting", ""),
    ] {
        let _ = writeln!(out, "add rule {TABLE} {src} {extra}jump {dst}");
    }
    let _ = writeln!(out, "add rule {TABLE} mark-for-masquerade mark set mark or {MASQ_MARK}");
    let _ = writeln!(out, "add rule {TABLE} masquerading mark and {MASQ_MARK} == 0 return");
    let _ = writeln!(out, "add rule {TABLE} masquerading mark set mark xor {MASQ_MARK}");
    let _ = writeln!(out, "add rule {TABLE} masquerading masquerade fully-random");

    let addr_map = "type ipv4_addr . inet_proto . inet_service : verdict";
    let port_map = "type inet_proto . inet_service : verdict";
    let _ = writeln!(out, "add map {TABLE} no-endpoint-services {{ {addr_map} ; }}");
    let _ = writeln!(out, "add map {TABLE} no-endpoint-nodeports {{ {port_map} ; }}");
    let _ = writeln!(out, "add chain {TABLE} reject-chain");
    let _ = writeln!(out, "add rule {TABLE} reject-chain reject");
    let _ =
        writeln!(out, "add rule {TABLE} endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    let _ = writeln!(
        out,
        "add rule {TABLE} endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap \
         @no-endpoint-nodeports"
    );
    let _ = writeln!(out, "add map {TABLE} firewall-ips {{ {addr_map} ; }}");
    let _ = writeln!(out, "add rule {TABLE} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips");
    let _ = writeln!(out, "add map {TABLE} service-ips {{ {addr_map} ; }}");
    let _ = writeln!(out, "add map {TABLE} service-nodeports {{ {port_map} ; }}");
    let _ = writeln!(out, "add rule {TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips");
    let _ = writeln!(
        out,
        "add rule {TABLE} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap \
         @service-nodeports"
    );
}

fn service(out: &mut String, svc: &ServiceSpec) {
    let proto = svc.proto.lower();
    let base = format!("{NAMESPACE}/{}/{proto}/{PORT_NAME}", svc.name);
    let svc_chain = format!("service-{}-{base}", &chain_hash(&base)[..8]);
    let ep_chains: Vec<String> = svc
        .backends
        .iter()
        .map(|ep| {
            let name = format!("{base}__{}/{}", ep.ip(), ep.port());
            format!("endpoint-{}-{name}", &chain_hash(&name)[..8])
        })
        .collect();
    for chain in &ep_chains {
        let _ = writeln!(out, "add chain {TABLE} {chain}");
    }
    let _ = writeln!(out, "add chain {TABLE} {svc_chain}");
    let _ =
        writeln!(out, "add element {TABLE} service-ips {{ {} . {proto} . {} : goto {svc_chain} }}", svc.vip, svc.port);
    let _ = writeln!(
        out,
        "add rule {TABLE} {svc_chain} ip daddr {} {proto} dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        svc.vip, svc.port
    );
    let elements: Vec<String> = ep_chains.iter().enumerate().map(|(i, c)| format!("{i} : goto {c}")).collect();
    let _ = writeln!(
        out,
        "add rule {TABLE} {svc_chain} numgen random mod {} vmap {{ {} }}",
        ep_chains.len(),
        elements.join(" , ")
    );
    for (ep, chain) in svc.backends.iter().zip(&ep_chains) {
        let _ = writeln!(out, "add rule {TABLE} {chain} ip saddr {} jump mark-for-masquerade", ep.ip());
        let _ = writeln!(out, "add rule {TABLE} {chain} meta l4proto {proto} dnat to {ep}");
    }
}

#[cfg(test)]
mod tests {
    use crate::addressing::Topology;

    #[test]
    fn layout_has_kube_proxy_shape() {
        let topo = Topology { services: 1, endpoints: 3 };
        let services: Vec<_> = topo.all().collect();
        let rules = super::ruleset(&services);
        assert!(rules.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(rules.contains("add element ip kube-proxy service-ips { 10.96.1.0 . tcp . 80 : goto service-"));
        assert!(rules.contains("meta l4proto udp dnat to 10.79.255.1:5353"));
    }
}
