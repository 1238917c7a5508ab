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
//! A dual-stack kube-proxy programs the same layout a second time in
//! `table ip6 kube-proxy` (one proxier per family), with `ip6` matches,
//! `ipv6_addr` set types, `::1` instead of 127.0.0.0/8 and the family's
//! cluster CIDR; [`ruleset`] with `ipv6` adds that table, built from the
//! IPv6 twins of the same Services.
//!
//! Difference: chain-name hashes are FNV-based instead of SHA-256 (same
//! shape: 8 base32 characters then the readable name).

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use crate::{
    addressing::{CLUSTER_CIDR, CLUSTER_CIDR6, NAMESPACE, PORT_NAME, ServiceSpec, twin6},
    modes::chain_hash,
};

const MASQ_MARK: &str = "0x4000";

/// What differs between the `ip` and the `ip6` table.
struct Table {
    name: &'static str,
    /// The address match keyword (`ip` / `ip6`).
    ip: &'static str,
    addr_type: &'static str,
    loopback: &'static str,
    cluster_cidr: &'static str,
    /// This family's address for a bench IPv4 address.
    addr: fn(std::net::Ipv4Addr) -> IpAddr,
}

const V4: Table = Table {
    name: "ip kube-proxy",
    ip: "ip",
    addr_type: "ipv4_addr",
    loopback: "127.0.0.0/8",
    cluster_cidr: CLUSTER_CIDR,
    addr: IpAddr::V4,
};

const V6: Table = Table {
    name: "ip6 kube-proxy",
    ip: "ip6",
    addr_type: "ipv6_addr",
    loopback: "::1",
    cluster_cidr: CLUSTER_CIDR6,
    addr: |v4| IpAddr::V6(twin6(v4)),
};

/// The whole ruleset for `services`: the `ip` table, and with `ipv6` also
/// the `ip6` table of their IPv6 twins.
pub(crate) fn ruleset(services: &[ServiceSpec], ipv6: bool) -> String {
    let tables: &[Table] = if ipv6 { &[V4, V6] } else { &[V4] };
    let mut out = String::with_capacity(
        tables.len() * services.len() * (400 + 300 * services.first().map_or(1, |s| s.backends.len())),
    );
    for t in tables {
        setup(&mut out, t);
        for svc in services {
            service(&mut out, t, svc);
        }
    }
    out
}

fn setup(out: &mut String, t: &Table) {
    let (table, ip, loopback) = (t.name, t.ip, t.loopback);
    let _ = writeln!(out, "add table {table} {{ comment \"rules for kube-proxy\" ; }}");
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
        let _ = writeln!(out, "add chain {table} {name} {{ type {ty} hook {hook} priority {prio} ; }}");
    }
    for chain in ["endpoints-check", "firewall-check", "services", "masquerading", "mark-for-masquerade"] {
        let _ = writeln!(out, "add chain {table} {chain}");
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
        let _ = writeln!(out, "add rule {table} {src} {extra}jump {dst}");
    }
    let _ = writeln!(out, "add rule {table} mark-for-masquerade mark set mark or {MASQ_MARK}");
    let _ = writeln!(out, "add rule {table} masquerading mark and {MASQ_MARK} == 0 return");
    let _ = writeln!(out, "add rule {table} masquerading mark set mark xor {MASQ_MARK}");
    let _ = writeln!(out, "add rule {table} masquerading masquerade fully-random");

    let addr_map = format!("type {} . inet_proto . inet_service : verdict", t.addr_type);
    let port_map = "type inet_proto . inet_service : verdict";
    let _ = writeln!(out, "add map {table} no-endpoint-services {{ {addr_map} ; }}");
    let _ = writeln!(out, "add map {table} no-endpoint-nodeports {{ {port_map} ; }}");
    let _ = writeln!(out, "add chain {table} reject-chain");
    let _ = writeln!(out, "add rule {table} reject-chain reject");
    let _ = writeln!(
        out,
        "add rule {table} endpoints-check {ip} daddr . meta l4proto . th dport vmap @no-endpoint-services"
    );
    let _ = writeln!(
        out,
        "add rule {table} endpoints-check fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport vmap \
         @no-endpoint-nodeports"
    );
    let _ = writeln!(out, "add map {table} firewall-ips {{ {addr_map} ; }}");
    let _ = writeln!(out, "add rule {table} firewall-check {ip} daddr . meta l4proto . th dport vmap @firewall-ips");
    let _ = writeln!(out, "add map {table} service-ips {{ {addr_map} ; }}");
    let _ = writeln!(out, "add map {table} service-nodeports {{ {port_map} ; }}");
    let _ = writeln!(out, "add rule {table} services {ip} daddr . meta l4proto . th dport vmap @service-ips");
    let _ = writeln!(
        out,
        "add rule {table} services fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport vmap \
         @service-nodeports"
    );
}

fn service(out: &mut String, t: &Table, svc: &ServiceSpec) {
    let (table, ip) = (t.name, t.ip);
    let vip = (t.addr)(svc.vip);
    let backends: Vec<SocketAddr> = svc.backends.iter().map(|b| SocketAddr::new((t.addr)(*b.ip()), b.port())).collect();
    let proto = svc.proto.lower();
    let base = format!("{NAMESPACE}/{}/{proto}/{PORT_NAME}", svc.name);
    let svc_chain = format!("service-{}-{base}", &chain_hash(&base)[..8]);
    // nft names cannot hold ':', so an IPv6 endpoint's is spelled with '.'.
    let ep_chains: Vec<String> = backends
        .iter()
        .map(|ep| {
            let name = format!("{base}__{}/{}", ep.ip().to_string().replace(':', "."), ep.port());
            format!("endpoint-{}-{name}", &chain_hash(&name)[..8])
        })
        .collect();
    for chain in &ep_chains {
        let _ = writeln!(out, "add chain {table} {chain}");
    }
    let _ = writeln!(out, "add chain {table} {svc_chain}");
    let _ = writeln!(out, "add element {table} service-ips {{ {vip} . {proto} . {} : goto {svc_chain} }}", svc.port);
    let _ = writeln!(
        out,
        "add rule {table} {svc_chain} {ip} daddr {vip} {proto} dport {} {ip} saddr != {} jump mark-for-masquerade",
        svc.port, t.cluster_cidr
    );
    let elements: Vec<String> = ep_chains.iter().enumerate().map(|(i, c)| format!("{i} : goto {c}")).collect();
    let _ = writeln!(
        out,
        "add rule {table} {svc_chain} numgen random mod {} vmap {{ {} }}",
        ep_chains.len(),
        elements.join(" , ")
    );
    for (ep, chain) in backends.iter().zip(&ep_chains) {
        let _ = writeln!(out, "add rule {table} {chain} {ip} saddr {} jump mark-for-masquerade", ep.ip());
        let _ = writeln!(out, "add rule {table} {chain} meta l4proto {proto} dnat to {ep}");
    }
    if let Some(node_port) = svc.node_port {
        // The external chain of externalTrafficPolicy Cluster: masquerade,
        // then the Service's chain; found through `service-nodeports`.
        let ext_chain = format!("external-{}-{base}", &chain_hash(&base)[..8]);
        let _ = writeln!(out, "add chain {table} {ext_chain}");
        let _ = writeln!(out, "add element {table} service-nodeports {{ {proto} . {node_port} : goto {ext_chain} }}");
        let _ = writeln!(out, "add rule {table} {ext_chain} jump mark-for-masquerade");
        let _ = writeln!(out, "add rule {table} {ext_chain} goto {svc_chain}");
    }
}

#[cfg(test)]
mod tests {
    use crate::addressing::Topology;

    #[test]
    fn layout_has_kube_proxy_shape() {
        let topo = Topology { services: 1, endpoints: 3 };
        let services: Vec<_> = topo.all().collect();
        let rules = super::ruleset(&services, false);
        assert!(rules.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(rules.contains("add element ip kube-proxy service-ips { 10.96.1.0 . tcp . 80 : goto service-"));
        assert!(rules.contains("meta l4proto udp dnat to 10.79.255.1:5353"));
        assert!(!rules.contains("ip6"));
        let dual = super::ruleset(&services, true);
        assert!(dual.contains("add element ip6 kube-proxy service-ips { fd00::a60:100 . tcp . 80 : goto service-"));
        assert!(dual.contains("add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap"));
        assert!(dual.contains("meta l4proto udp dnat to [fd00::a4f:ff01]:5353"));
        assert!(dual.contains("ip6 saddr != fd00::a40:0/106 jump mark-for-masquerade"));
        assert!(!rules.contains("add element ip kube-proxy service-nodeports"));
    }

    #[test]
    fn node_ports_go_through_an_external_chain() {
        let topo = Topology { services: 1, endpoints: 3 };
        let rules = super::ruleset(&topo.with_node_ports(), false);
        let element = rules.lines().find(|l| l.contains("service-nodeports { tcp . 20000 : goto external-")).unwrap();
        let ext = element.rsplit(' ').nth(1).unwrap();
        assert!(rules.contains(&format!("add rule ip kube-proxy {ext} jump mark-for-masquerade")));
        assert!(rules.contains(&format!("add rule ip kube-proxy {ext} goto service-")));
        assert!(rules.contains("service-nodeports { tcp . 19999 : goto external-"));
    }
}
