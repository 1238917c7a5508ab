//! kube-proxy's iptables layout, as `iptables-restore` input, following
//! kubernetes pkg/proxy/iptables/proxier.go (syncProxyRules,
//! writeServiceToEndpointRules, iptablesJumpChains) for ClusterIP Services
//! with `--cluster-cidr` set, default masquerade bit 14, no session
//! affinity, NodePort addresses unrestricted:
//!
//! ```text
//! nat OUTPUT/PREROUTING -> KUBE-SERVICES
//!   -d VIP --dport P -j KUBE-SVC-X            (one rule per Service port, in order)
//!   ... last: -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
//! KUBE-SVC-X: ! -s clusterCIDR -j KUBE-MARK-MASQ
//!             -m statistic --mode random --probability 1/n -j KUBE-SEP-Y  (n, n-1, .., last unconditional)
//! KUBE-SEP-Y: -s EP -j KUBE-MARK-MASQ ; -j DNAT --to-destination EP
//! filter OUTPUT/INPUT/FORWARD: ct NEW -> KUBE-PROXY-FIREWALL, KUBE-SERVICES, ...
//! ```
//!
//! Differences, none of which changes what a packet traverses: chain-name
//! hashes are FNV-based instead of SHA-256 (same shape: 16 base32
//! characters); the jump rules kube-proxy installs with `iptables -I` are
//! part of the restore file (the namespace is fresh).

use std::fmt::Write as _;

use crate::{
    addressing::{CLUSTER_CIDR, ServiceSpec},
    modes::chain_hash,
};

/// kube-proxy's masquerade mark (bit 14).
const MASQ_MARK: &str = "0x4000";
/// Above this many endpoints kube-proxy drops per-endpoint comments.
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// The whole ruleset for `services`.
pub(crate) fn ruleset(services: &[ServiceSpec]) -> String {
    let endpoints: usize = services.iter().map(|s| s.backends.len()).sum();
    let large = endpoints > LARGE_CLUSTER_ENDPOINTS;
    let mut out =
        String::with_capacity(services.len() * (200 + 260 * services.first().map_or(1, |s| s.backends.len())));
    filter_table(&mut out);

    out.push_str("*nat\n");
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let mut chains = String::new();
    let mut rules = String::new();
    for (src, comment) in [("PREROUTING", "kubernetes service portals"), ("OUTPUT", "kubernetes service portals")] {
        let _ = writeln!(rules, "-A {src} -m comment --comment \"{comment}\" -j KUBE-SERVICES");
    }
    let _ = writeln!(rules, "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");

    for svc in services {
        service_rules(&mut chains, &mut rules, svc, large);
    }
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this \
         chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    out.push_str(&chains);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

fn filter_table(out: &mut String) {
    out.push_str("*filter\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let new = "-m conntrack --ctstate NEW ";
    for (src, dst, extra, comment) in [
        ("INPUT", "KUBE-EXTERNAL-SERVICES", new, "kubernetes externally-visible service portals"),
        ("FORWARD", "KUBE-EXTERNAL-SERVICES", new, "kubernetes externally-visible service portals"),
        ("INPUT", "KUBE-NODEPORTS", "", "kubernetes health check service ports"),
        ("FORWARD", "KUBE-SERVICES", new, "kubernetes service portals"),
        ("OUTPUT", "KUBE-SERVICES", new, "kubernetes service portals"),
        ("FORWARD", "KUBE-FORWARD", "", "kubernetes forwarding rules"),
        ("INPUT", "KUBE-PROXY-FIREWALL", new, "kubernetes load balancer firewall"),
        ("OUTPUT", "KUBE-PROXY-FIREWALL", new, "kubernetes load balancer firewall"),
        ("FORWARD", "KUBE-PROXY-FIREWALL", new, "kubernetes load balancer firewall"),
    ] {
        let _ = writeln!(out, "-A {src} {extra}-m comment --comment \"{comment}\" -j {dst}");
    }
    // kubelet's (and kube-proxy's copy of) the localhost NodePort guard.
    let _ = writeln!(out, "-A INPUT -j KUBE-FIREWALL");
    let _ = writeln!(out, "-A OUTPUT -j KUBE-FIREWALL");
    let _ = writeln!(
        out,
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 \
         -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    );
    let _ = writeln!(out, "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate \
         RELATED,ESTABLISHED -j ACCEPT"
    );
    out.push_str("COMMIT\n");
}

fn service_rules(chains: &mut String, rules: &mut String, svc: &ServiceSpec, large: bool) {
    let name = svc.port_name();
    let proto = svc.proto.lower();
    let svc_chain = format!("KUBE-SVC-{}", chain_hash(&format!("{name}{proto}")));
    let _ = writeln!(chains, ":{svc_chain} - [0:0]");
    let matcher = format!("-m {proto} -p {proto} -d {}/32 --dport {}", svc.vip, svc.port);
    let _ = writeln!(rules, "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {matcher} -j {svc_chain}");
    let _ = writeln!(
        rules,
        "-A {svc_chain} -m comment --comment \"{name} cluster IP\" {matcher} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
    );
    let n = svc.backends.len();
    for (i, ep) in svc.backends.iter().enumerate() {
        let sep = format!("KUBE-SEP-{}", chain_hash(&format!("{name}{proto}{ep}")));
        let _ = writeln!(chains, ":{sep} - [0:0]");
        let comment = if large { String::new() } else { format!("-m comment --comment \"{name} -> {ep}\" ") };
        let probability = if i + 1 < n {
            format!("-m statistic --mode random --probability {:.10} ", 1.0 / (n - i) as f64)
        } else {
            String::new()
        };
        let _ = writeln!(rules, "-A {svc_chain} {comment}{probability}-j {sep}");
        let sep_comment = if large { String::new() } else { format!("-m comment --comment {name} ") };
        let _ = writeln!(rules, "-A {sep} {sep_comment}-s {}/32 -j KUBE-MARK-MASQ", ep.ip());
        let _ = writeln!(rules, "-A {sep} {sep_comment}-m {proto} -p {proto} -j DNAT --to-destination {ep}");
    }
    if let Some(node_port) = svc.node_port {
        // writeServiceToEndpointRules' external chain, externalTrafficPolicy
        // Cluster: every external packet is masqueraded, then load-balanced
        // by the Service's chain.
        let ext_chain = format!("KUBE-EXT-{}", chain_hash(&format!("{name}{proto}")));
        let _ = writeln!(chains, ":{ext_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-NODEPORTS -m comment --comment \"{name}\" -m {proto} -p {proto} --dport {node_port} -j {ext_chain}"
        );
        let _ = writeln!(
            rules,
            "-A {ext_chain} -m comment --comment \"masquerade traffic for {name} external destinations\" -j \
             KUBE-MARK-MASQ"
        );
        let _ = writeln!(rules, "-A {ext_chain} -j {svc_chain}");
    }
}

#[cfg(test)]
mod tests {
    use crate::addressing::Topology;

    #[test]
    fn layout_has_kube_proxy_shape() {
        let topo = Topology { services: 2, endpoints: 3 };
        let services: Vec<_> = topo.all().collect();
        let rules = super::ruleset(&services);
        assert!(rules.contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(rules.contains("--probability 0.5000000000 -j KUBE-SEP-"));
        assert!(rules.contains("-j DNAT --to-destination 10.64.1.5:8080"));
        assert!(rules.contains("-d 10.96.1.1/32 --dport 80 -j KUBE-SVC-"));
        // The nodeports jump is the last rule of KUBE-SERVICES.
        let last = rules.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"));
        assert_eq!(rules.matches("COMMIT").count(), 2);
        assert!(!rules.contains("KUBE-EXT-"));
    }

    #[test]
    fn node_ports_go_through_an_external_chain() {
        let topo = Topology { services: 2, endpoints: 3 };
        let rules = super::ruleset(&topo.with_node_ports());
        let np = rules.lines().find(|l| l.contains("--dport 20001 -j KUBE-EXT-")).unwrap();
        assert!(np.starts_with("-A KUBE-NODEPORTS -m comment --comment \"bench/svc-1:p\" -m tcp -p tcp"));
        let ext = np.rsplit(' ').next().unwrap();
        assert!(rules.contains(&format!("-A {ext} -m comment --comment \"masquerade traffic for bench/svc-1:p")));
        assert!(rules.lines().any(|l| l.starts_with(&format!("-A {ext} -j KUBE-SVC-"))));
    }
}
