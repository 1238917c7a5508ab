//! `svc-agent status`: what the pinned maps say, joined into Services.
//! Reads only the pins, so it works with or without a running agent.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
};

use aya::maps::MapInfo;
use serde::Serialize;
use svc_common::{ServiceMeta, SlotKey, names};

use crate::{
    cli::{Output, StatusArgs},
    dataplane::encode::{socket_addr, socket_addr6},
    dataplane::{
        Table as _, devices,
        family::{Backend, Family, FrontendValue, SlotRef},
        maps::{BpfMaps, ProgramMaps},
        pins::PinLayout,
        writer::name_str,
    },
    error::{Error, Result},
    model::Proto,
    sys,
};

/// One frontend row.
#[derive(Debug, Serialize)]
struct FrontendRow {
    namespace: String,
    name: String,
    port_name: String,
    kind: &'static str,
    /// `all`, or `outside` for the outside-clients-only twin
    /// (externalTrafficPolicy: Local).
    scope: &'static str,
    address: String,
    protocol: &'static str,
    svc_id: u32,
    set_id: u32,
    affinity_timeout_seconds: u32,
    backends: Vec<String>,
}

/// One session-affinity entry.
#[derive(Debug, Serialize)]
struct AffinityRow {
    netns_cookie: u64,
    svc_id: u32,
    namespace: String,
    name: String,
    port_name: String,
    backend: String,
    idle_seconds: f64,
}

/// Fill level of one map.
#[derive(Debug, Serialize)]
struct MapRow {
    name: &'static str,
    entries: usize,
    max_entries: u32,
}

/// A device the TC programs run on.
#[derive(Debug, Serialize)]
struct DeviceRow {
    name: String,
    ifindex: u32,
    snat_address: Option<String>,
    /// The TC links pinned for it.
    programs: Vec<String>,
}

/// The north-south path: devices and the flow table.
#[derive(Debug, Serialize)]
struct NorthSouth {
    devices: Vec<DeviceRow>,
    /// Live flows (original-direction entries not expired).
    flows: usize,
    /// Entries in SVC_FLOWS, expired ones included (two per flow).
    flow_entries: usize,
}

/// A pod whose sockets are not translated (`svc.dataplane.io/socket-lb:
/// disabled`), by its cgroup.
#[derive(Debug, Serialize)]
struct ExemptRow {
    namespace: String,
    name: String,
    cgroup_id: u64,
}

#[derive(Debug, Serialize)]
struct Status {
    frontends: Vec<FrontendRow>,
    affinity: Vec<AffinityRow>,
    /// Pods that opt out of socket translation (their cgroup found).
    exempt_pods: Vec<ExemptRow>,
    north_south: NorthSouth,
    maps: Vec<MapRow>,
}

pub(super) fn status(args: &StatusArgs) -> Result<()> {
    let layout = PinLayout::new(&args.bpffs);
    if !layout.map(names::FRONTENDS).exists() {
        return Err(Error::NotPinned(layout.root().to_owned()));
    }
    let status = read_status(&layout)?;
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&status).map_err(|e| Error::Environment(e.to_string()))? + "\n",
        Output::Table => table(&status),
    };
    // A closed pipe (`status | head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing status", e)),
    }
}

fn read_status(layout: &PinLayout) -> Result<Status> {
    let maps = BpfMaps::open_pinned(layout)?;
    let dump = maps.dump().map_err(|e| Error::Environment(e.to_string()))?;
    let meta: HashMap<u32, ServiceMeta> = dump.meta.iter().copied().collect();
    let slots: BTreeMap<SlotRef, Backend> = dump.slots.iter().copied().collect();

    let mut frontends: Vec<FrontendRow> = dump
        .frontends
        .iter()
        // A self-check's transient probe is no Service's.
        .filter(|(key, _)| !crate::dataplane::self_check::is_probe(key.socket_addr()))
        .map(|(key, fe)| {
            let names = meta.get(&fe.svc_id());
            let backends = if fe.is_inline() {
                fe.inline_backends().iter().map(|b| b.socket_addr().to_string()).collect()
            } else {
                (0..fe.count())
                    .map(|slot| {
                        let slot = SlotRef { family: key.family(), key: SlotKey { set_id: fe.set_id(), slot } };
                        slots.get(&slot).map_or_else(|| "<missing>".to_owned(), |b| b.socket_addr().to_string())
                    })
                    .collect()
            };
            FrontendRow {
                namespace: names.map(|m| name_str(&m.namespace)).unwrap_or_default(),
                name: names.map(|m| name_str(&m.name)).unwrap_or_default(),
                port_name: names.map(|m| name_str(&m.port_name)).unwrap_or_default(),
                kind: kind_name(fe),
                scope: match key.scope() {
                    crate::model::Scope::All => "all",
                    crate::model::Scope::External => "outside",
                },
                address: key.socket_addr().to_string(),
                protocol: Proto::from_number(key.proto()).map_or("?", Proto::as_str),
                svc_id: fe.svc_id(),
                set_id: fe.set_id(),
                affinity_timeout_seconds: fe.affinity_timeout(),
                backends,
            }
        })
        .collect();
    // The outside-only twin of a frontend sorts after it ("all" < "outside").
    frontends.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.kind, &a.address, a.scope).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.kind,
            &b.address,
            b.scope,
        ))
    });

    let program_maps = ProgramMaps::open_pinned(layout)?;
    let now = sys::monotonic_ns();
    let mut affinity = Vec::new();
    let mut pins = Vec::new();
    for entry in &program_maps.affinity {
        let (key, value) = entry.map_err(|e| Error::map(names::AFFINITY, e))?;
        pins.push((key, socket_addr(value.backend.addr, value.backend.port).to_string(), value.last_used_ns));
    }
    let v4_pins = pins.len();
    for entry in &program_maps.affinity6 {
        let (key, value) = entry.map_err(|e| Error::map(names::AFFINITY6, e))?;
        pins.push((key, socket_addr6(value.backend.addr, value.backend.port).to_string(), value.last_used_ns));
    }
    for (key, backend, last_used_ns) in pins {
        let names = meta.get(&key.svc_id);
        affinity.push(AffinityRow {
            netns_cookie: key.netns_cookie,
            svc_id: key.svc_id,
            namespace: names.map(|m| name_str(&m.namespace)).unwrap_or_default(),
            name: names.map(|m| name_str(&m.name)).unwrap_or_default(),
            port_name: names.map(|m| name_str(&m.port_name)).unwrap_or_default(),
            backend,
            idle_seconds: now.saturating_sub(last_used_ns) as f64 / 1e9,
        });
    }
    let v6_frontends = dump.frontends.iter().filter(|(k, _)| k.family() == Family::V6).count();
    let v6_slots = dump.slots.iter().filter(|(k, _)| k.family == Family::V6).count();
    let v6_index = dump.index.iter().filter(|(k, _)| k.backend.family() == Family::V6).count();
    let counts = [
        (names::FRONTENDS, dump.frontends.len() - v6_frontends),
        (names::BACKENDS, dump.slots.len() - v6_slots),
        (names::BACKEND_INDEX, dump.index.len() - v6_index),
        (names::AFFINITY, v4_pins),
        (names::REV_NAT, program_maps.revnat.keys().count()),
        (names::META, dump.meta.len()),
        (names::CONFIG, 1),
        (names::FRONTENDS6, v6_frontends),
        (names::BACKENDS6, v6_slots),
        (names::BACKEND_INDEX6, v6_index),
        (names::AFFINITY6, affinity.len() - v4_pins),
        (names::REV_NAT6, program_maps.revnat6.keys().count()),
    ];
    let north_south = north_south(layout, &program_maps, now)?;
    let mut exempt_pods = Vec::new();
    for entry in &program_maps.exempt {
        let (cgroup_id, pod) = entry.map_err(|e| Error::map(names::EXEMPT, e))?;
        exempt_pods.push(ExemptRow { namespace: name_str(&pod.namespace), name: name_str(&pod.name), cgroup_id });
    }
    exempt_pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let counts = counts.into_iter().chain([
        (names::FLOWS, north_south.flow_entries),
        (names::DEVICES, north_south.devices.len()),
        (names::EXEMPT, exempt_pods.len()),
    ]);
    let mut maps_rows = Vec::new();
    for (name, entries) in counts {
        let info = MapInfo::from_pin(layout.map(name)).map_err(|e| Error::map(name, e))?;
        maps_rows.push(MapRow { name, entries, max_entries: info.max_entries() });
    }
    Ok(Status { frontends, affinity, exempt_pods, north_south, maps: maps_rows })
}

fn north_south(layout: &PinLayout, maps: &ProgramMaps, now: u64) -> Result<NorthSouth> {
    let links: Vec<String> = std::fs::read_dir(layout.links_dir())
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let mut devices = Vec::new();
    for entry in &maps.devices {
        let (ifindex, info) = entry.map_err(|e| Error::map(names::DEVICES, e))?;
        let name = sys::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        let programs = devices::TC_PROGRAMS
            .iter()
            .map(|(p, _)| devices::link_name(p, &name))
            .filter(|l| links.contains(l))
            .collect();
        let snat_address = (info.addr4 != [0; 4]).then(|| std::net::Ipv4Addr::from(info.addr4).to_string());
        devices.push(DeviceRow { name, ifindex, snat_address, programs });
    }
    devices.sort_by_key(|d| d.ifindex);
    let (mut flows, mut flow_entries) = (0, 0);
    for entry in &maps.flows {
        let (key, value) = entry.map_err(|e| Error::map(names::FLOWS, e))?;
        flow_entries += 1;
        if value.flags & svc_common::flow_flags::REPLY == 0 && !value.expired(key.proto, now) {
            flows += 1;
        }
    }
    Ok(NorthSouth { devices, flows, flow_entries })
}

fn kind_name(fe: &FrontendValue) -> &'static str {
    if fe.is_node_port() {
        "NodePort"
    } else if fe.is_external_ip() {
        "ExternalIP"
    } else if fe.is_load_balancer() {
        "LoadBalancer"
    } else {
        "ClusterIP"
    }
}

fn table(status: &Status) -> String {
    let mut text = String::new();
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "PORT".to_owned(),
        "KIND".to_owned(),
        "FRONTEND".to_owned(),
        "PROTO".to_owned(),
        "AFFINITY".to_owned(),
        "BACKENDS".to_owned(),
    ]];
    for fe in &status.frontends {
        rows.push([
            fe.namespace.clone(),
            fe.name.clone(),
            if fe.port_name.is_empty() { "-".to_owned() } else { fe.port_name.clone() },
            if fe.scope == "all" { fe.kind.to_owned() } else { format!("{}/{}", fe.kind, fe.scope) },
            fe.address.clone(),
            fe.protocol.to_owned(),
            if fe.affinity_timeout_seconds == 0 { "-".to_owned() } else { format!("{}s", fe.affinity_timeout_seconds) },
            if fe.backends.is_empty() { "<none: refused>".to_owned() } else { fe.backends.join(",") },
        ]);
    }
    print_columns(&mut text, &rows);
    if !status.affinity.is_empty() {
        text.push('\n');
        let mut rows = vec![[
            "NAMESPACE".to_owned(),
            "NAME".to_owned(),
            "PORT".to_owned(),
            "CLIENT NETNS".to_owned(),
            "BACKEND".to_owned(),
            "IDLE".to_owned(),
        ]];
        for a in &status.affinity {
            rows.push([
                a.namespace.clone(),
                a.name.clone(),
                if a.port_name.is_empty() { "-".to_owned() } else { a.port_name.clone() },
                a.netns_cookie.to_string(),
                a.backend.clone(),
                format!("{:.1}s", a.idle_seconds),
            ]);
        }
        print_columns(&mut text, &rows);
    }
    if !status.exempt_pods.is_empty() {
        text.push('\n');
        let mut rows = vec![["EXEMPT NAMESPACE".to_owned(), "EXEMPT POD".to_owned(), "CGROUP ID".to_owned()]];
        for p in &status.exempt_pods {
            rows.push([p.namespace.clone(), p.name.clone(), p.cgroup_id.to_string()]);
        }
        print_columns(&mut text, &rows);
    }
    text.push('\n');
    let ns = &status.north_south;
    if ns.devices.is_empty() {
        text.push_str("north-south: no TC devices\n");
    } else {
        let mut rows =
            vec![["DEVICE".to_owned(), "IFINDEX".to_owned(), "SNAT ADDRESS".to_owned(), "PROGRAMS".to_owned()]];
        for d in &ns.devices {
            rows.push([
                d.name.clone(),
                d.ifindex.to_string(),
                d.snat_address.clone().unwrap_or_else(|| "-".to_owned()),
                if d.programs.is_empty() { "<not attached>".to_owned() } else { d.programs.join(",") },
            ]);
        }
        print_columns(&mut text, &rows);
        text.push_str(&format!("north-south flows: {} live ({} table entries)\n", ns.flows, ns.flow_entries));
    }
    text.push('\n');
    let mut rows = vec![["MAP".to_owned(), "ENTRIES".to_owned(), "CAPACITY".to_owned()]];
    for m in &status.maps {
        rows.push([m.name.to_owned(), m.entries.to_string(), m.max_entries.to_string()]);
    }
    print_columns(&mut text, &rows);
    text
}

fn print_columns<const N: usize>(text: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
}
