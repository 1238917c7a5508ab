//! The writer's diff and update protocol, against the in-memory table.

use std::{net::SocketAddrV4, sync::Arc};

use svc_common::{BackendIndexKey, FrontendKey4, SlotKey, fe_flags};

use super::Writer;
use crate::{
    dataplane::{
        memory::{MemoryTable, Op},
        table::Capacity,
    },
    model::{DesiredFrontend, DesiredService, FrontendKind, Proto, ServiceKey, ServicePortKey, frontend_key},
};

const ROOMY: Capacity = Capacity { frontends: 100, slots: 100, index: 100, meta: 100 };

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn frontend(svc: &str, fe: &str, backends: &[&str]) -> DesiredFrontend {
    DesiredFrontend {
        addr: addr(fe),
        proto: Proto::Tcp,
        kind: FrontendKind::ClusterIp,
        host_ns_only: false,
        port: ServicePortKey { service: key(svc), port_name: "http".into(), proto: Proto::Tcp },
        service_port: addr(fe).port(),
        backends: backends.iter().map(|b| addr(b)).collect::<Vec<_>>().into(),
        affinity_timeout: 0,
    }
}

fn service(frontends: Vec<DesiredFrontend>) -> Option<DesiredService> {
    Some(DesiredService { frontends })
}

fn fk(fe: &str) -> FrontendKey4 {
    frontend_key(addr(fe), Proto::Tcp)
}

/// The backends a frontend resolves to, read through the maps the way the
/// programs do: frontend -> (set, count) -> slots.
fn resolve(table: &MemoryTable, fe: &str) -> Option<Vec<SocketAddrV4>> {
    let value = table.frontends.get(&fk(fe))?;
    Some(
        (0..value.count)
            .map(|slot| {
                let b =
                    table.slots.get(&SlotKey { set_id: value.set_id, slot }).expect("every slot below count exists");
                crate::model::socket_addr(b.addr, b.port)
            })
            .collect(),
    )
}

fn writer() -> Writer<MemoryTable> {
    Writer::adopt(MemoryTable::new(ROOMY)).unwrap()
}

#[test]
fn programs_a_service_and_reads_back() {
    let mut w = writer();
    let report = w.apply(vec![(
        key("web"),
        service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:8080", "10.0.0.2:8080"])]),
    )]);
    assert_eq!(report.changed, 1);
    assert_eq!(resolve(w.table(), "10.96.0.10:80").unwrap(), vec![addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]);
    assert_eq!(w.table().meta.len(), 1);
}

#[test]
fn unchanged_desired_state_writes_nothing() {
    let mut w = writer();
    let desired = service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:8080"])]);
    w.apply(vec![(key("web"), desired.clone())]);
    let ops_before = w.table().ops.len();
    let report = w.apply(vec![(key("web"), desired)]);
    assert_eq!(report.changed, 0);
    assert_eq!(w.table().ops.len(), ops_before, "no map writes for an unchanged Service");
}

#[test]
fn backend_change_writes_new_set_before_switching_and_deletes_old_after() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:8080", "10.0.0.2:8080"])]))]);
    let old_set = w.table().frontends[&fk("10.96.0.10:80")].set_id;
    w.table.ops.clear();

    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.2:8080", "10.0.0.3:8080"])]))]);
    let ops = &w.table().ops;
    let switch = ops.iter().position(|op| matches!(op, Op::PutFrontend(..))).expect("frontend switched");
    let new_set = w.table().frontends[&fk("10.96.0.10:80")].set_id;
    assert_ne!(new_set, old_set, "a changed set gets a fresh id");
    // Every slot of the new set is written before the switch...
    let new_slots: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::PutSlot(k, _) if k.set_id == new_set))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(new_slots.len(), 2);
    assert!(new_slots.iter().all(|i| *i < switch));
    // ...and the old set is deleted only after it.
    let old_deletes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::DeleteSlot(k) if k.set_id == old_set))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(old_deletes.len(), 2);
    assert!(old_deletes.iter().all(|i| *i > switch));
    assert!(!w.table().slots.keys().any(|k| k.set_id == old_set), "old set fully removed");
}

#[test]
fn removed_service_leaves_nothing_behind() {
    let mut w = writer();
    let mut fe = frontend("web", "10.96.0.10:80", &["10.0.0.1:8080"]);
    fe.affinity_timeout = 30;
    w.apply(vec![(key("web"), service(vec![fe]))]);
    assert!(!w.table().index.is_empty());
    let report = w.apply(vec![(key("web"), None)]);
    assert_eq!(report.removed, 1);
    let t = w.table();
    assert!(t.frontends.is_empty() && t.slots.is_empty() && t.index.is_empty() && t.meta.is_empty(), "{t:?}");
}

#[test]
fn empty_backends_refuse_without_a_set() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &[])]))]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert_eq!((value.count, value.set_id), (0, 0));
    assert!(w.table().slots.is_empty());
}

#[test]
fn frontends_with_equal_backends_share_one_set() {
    let mut w = writer();
    w.apply(vec![(
        key("web"),
        service(vec![
            frontend("web", "10.96.0.10:80", &["10.0.0.1:8080"]),
            frontend("web", "192.0.2.1:80", &["10.0.0.1:8080"]),
        ]),
    )]);
    let t = w.table();
    assert_eq!(t.frontends[&fk("10.96.0.10:80")].set_id, t.frontends[&fk("192.0.2.1:80")].set_id);
    assert_eq!(t.slots.len(), 1);
}

#[test]
fn affinity_sets_carry_membership_entries() {
    let mut w = writer();
    let mut fe = frontend("web", "10.96.0.10:80", &["10.0.0.1:8080", "10.0.0.2:8080"]);
    fe.affinity_timeout = 10_800;
    w.apply(vec![(key("web"), service(vec![fe]))]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert_eq!(value.affinity_timeout, 10_800);
    assert_ne!(value.flags & fe_flags::INDEXED, 0);
    let member = BackendIndexKey { set_id: value.set_id, backend: crate::model::backend_value(addr("10.0.0.2:8080")) };
    assert_eq!(w.table().index.get(&member), Some(&1));
}

#[test]
fn full_map_refuses_only_that_service_and_keeps_its_old_state() {
    // Room for 4 slots: an update needs its old and new set at once.
    let mut w = Writer::adopt(MemoryTable::new(Capacity { frontends: 100, slots: 4, index: 100, meta: 100 })).unwrap();
    w.apply(vec![
        (key("a"), service(vec![frontend("a", "10.96.0.1:80", &["10.0.0.1:80"])])),
        (key("b"), service(vec![frontend("b", "10.96.0.2:80", &["10.0.0.2:80"])])),
    ]);
    // b grows to 3: 2 used + 3 new > 4.
    let report = w.apply(vec![(
        key("b"),
        service(vec![frontend("b", "10.96.0.2:80", &["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"])]),
    )]);
    assert_eq!(report.refused.len(), 1);
    assert!(report.refused[0].1.contains("SVC_BACKENDS is full"), "{:?}", report.refused);
    assert_eq!(resolve(w.table(), "10.96.0.2:80").unwrap(), vec![addr("10.0.0.2:80")], "b keeps serving its old set");
    assert_eq!(resolve(w.table(), "10.96.0.1:80").unwrap(), vec![addr("10.0.0.1:80")], "a untouched");
    // Once a leaves (1 used + 3 new = 4), b's pending update is applied by the retry.
    let report = w.apply(vec![(key("a"), None)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(resolve(w.table(), "10.96.0.2:80").unwrap().len(), 3);
}

#[test]
fn kernel_insert_failure_rolls_back_partial_writes() {
    // The pre-check thinks it fits (it does not know about entries written
    // by someone else), the table then fails mid-way: nothing may remain.
    let mut table = MemoryTable::new(Capacity { frontends: 100, slots: 2, index: 100, meta: 100 });
    table.slots.insert(SlotKey { set_id: 999, slot: 0 }, svc_common::Backend4::default());
    let mut w = Writer::adopt(table).unwrap();
    w.remove_orphans();
    w.table.slots.insert(SlotKey { set_id: 999, slot: 0 }, svc_common::Backend4::default());
    let report =
        w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:80", "10.0.0.2:80"])]))]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let t = w.table();
    assert!(t.frontends.is_empty(), "no frontend may point at a partial set");
    assert_eq!(t.slots.len(), 1, "partial set deleted: {:?}", t.slots);
    assert!(t.meta.is_empty(), "new names rolled back");
}

#[test]
fn address_owned_by_another_service_waits_until_released() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "192.0.2.1:80", &["10.0.0.1:80"])]))]);
    let report = w.apply(vec![(key("b"), service(vec![frontend("b", "192.0.2.1:80", &["10.0.0.2:80"])]))]);
    assert_eq!(report.refused.len(), 1);
    assert!(report.refused[0].1.contains("already used by default/a"));
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.1:80")]);
    w.apply(vec![(key("a"), None)]);
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.2:80")], "b takes over after a is gone");
}

#[test]
fn adoption_recovers_state_and_removes_stale_only_when_told() {
    let mut w = writer();
    w.apply(vec![
        (key("keep"), service(vec![frontend("keep", "10.96.0.1:80", &["10.0.0.1:80"])])),
        (key("stale"), service(vec![frontend("stale", "10.96.0.2:80", &["10.0.0.2:80"])])),
    ]);
    let mut table = w.table.clone();
    // A crash between writing a set and switching to it leaves an orphan.
    table.slots.insert(SlotKey { set_id: 4242, slot: 0 }, svc_common::Backend4::default());
    table.ops.clear();

    let mut adopted = Writer::adopt(table).unwrap();
    assert!(adopted.table().ops.is_empty(), "adoption itself writes nothing");
    let mut programmed: Vec<_> = adopted.programmed_services().cloned().collect();
    programmed.sort();
    assert_eq!(programmed, vec![key("keep"), key("stale")]);

    // The first sync: keep is unchanged (no writes for it), stale is gone.
    let report = adopted.apply(vec![
        (key("keep"), service(vec![frontend("keep", "10.96.0.1:80", &["10.0.0.1:80"])])),
        (key("stale"), None),
    ]);
    assert_eq!((report.changed, report.removed), (0, 1));
    assert!(!adopted.table().ops.iter().any(|op| matches!(op, Op::PutFrontend(k, _) if *k == fk("10.96.0.1:80"))));
    assert!(adopted.table().slots.contains_key(&SlotKey { set_id: 4242, slot: 0 }), "orphans wait for remove_orphans");
    adopted.remove_orphans();
    assert_eq!(adopted.table().slots.len(), 1);
    assert_eq!(resolve(adopted.table(), "10.96.0.1:80").unwrap(), vec![addr("10.0.0.1:80")]);

    // New sets never reuse an id still present in the adopted maps.
    adopted.apply(vec![(key("new"), service(vec![frontend("new", "10.96.0.3:80", &["10.0.0.3:80"])]))]);
    let ids: Vec<u32> = adopted.table().frontends.values().map(|v| v.set_id).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn upserts_run_before_removals_in_a_batch() {
    let mut w = writer();
    w.apply(vec![(key("old"), service(vec![frontend("old", "192.0.2.1:80", &["10.0.0.1:80"])]))]);
    w.table.ops.clear();
    // In one batch the address moves from "old" to "new": "new" must not
    // find a hole, and must own the address at the end.
    w.apply(vec![(key("old"), None), (key("new"), service(vec![frontend("new", "192.0.2.1:80", &["10.0.0.2:80"])]))]);
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.2:80")]);
    let deletes_of_address =
        w.table().ops.iter().filter(|op| matches!(op, Op::DeleteFrontend(k) if *k == fk("192.0.2.1:80"))).count();
    assert_eq!(deletes_of_address, 1, "the old owner's removal deleted it once, the retry re-added it");
    let _: Arc<[SocketAddrV4]> = Arc::from(vec![]);
}

#[test]
fn removed_udp_backends_are_reported_for_socket_resets() {
    let mut w = writer();
    let udp = |backends: &[&str]| {
        let mut fe = frontend("dns", "10.96.0.53:53", backends);
        fe.proto = Proto::Udp;
        fe.port.proto = Proto::Udp;
        fe
    };
    let tcp = frontend("dns", "10.96.0.53:53", &["10.0.0.1:53", "10.0.0.2:53"]);
    let report = w.apply(vec![(key("dns"), service(vec![tcp.clone(), udp(&["10.0.0.1:53", "10.0.0.2:53"])]))]);
    assert!(report.udp_removed.is_empty(), "nothing removed yet");

    // 10.0.0.2 leaves both protocols: only the UDP frontend needs resets.
    let report = w.apply(vec![(
        key("dns"),
        service(vec![frontend("dns", "10.96.0.53:53", &["10.0.0.1:53"]), udp(&["10.0.0.1:53"])]),
    )]);
    let udp_key = frontend_key(addr("10.96.0.53:53"), Proto::Udp);
    assert_eq!(report.udp_removed, vec![(udp_key, vec![crate::model::backend_value(addr("10.0.0.2:53"))])]);

    // Deleting the Service removes the rest.
    let report = w.apply(vec![(key("dns"), None)]);
    assert_eq!(report.udp_removed, vec![(udp_key, vec![crate::model::backend_value(addr("10.0.0.1:53"))])]);
}
