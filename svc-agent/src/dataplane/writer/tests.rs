//! The writer's diff and update protocol, against the in-memory table.
//! Sets of up to `INLINE_BACKENDS` backends live in the frontend value;
//! larger ones in slots, so most cases are checked with both.

use std::net::SocketAddrV4;

use svc_common::{INLINE_BACKENDS, SlotKey};

use super::{ServiceUpdate, Writer};
use crate::{
    dataplane::{
        encode::{backend_value, frontend_key},
        family::{Family, FrontendKey, FrontendValue, IndexKey, SlotRef},
        memory::{MemoryTable, Op},
        table::Capacity,
    },
    model::{DesiredFrontend, DesiredService, FrontendKind, Proto, ServiceKey, ServicePortKey},
};

pub(super) const ROOMY: Capacity = Capacity { frontends: 100, slots: 1000, index: 1000, meta: 100, reverse: 1000 };
/// More backends than fit inline.
pub(super) const LARGE: usize = INLINE_BACKENDS + 4;

pub(super) fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// `n` backends 10.<net>.0.1..n:80.
pub(super) fn backends(net: u8, n: usize) -> Vec<SocketAddrV4> {
    (1..=n).map(|i| SocketAddrV4::new([10, net, (i / 250) as u8, (i % 250) as u8].into(), 80)).collect()
}

pub(super) fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

pub(super) fn frontend_of(svc: &str, fe: &str, backends: &[SocketAddrV4]) -> DesiredFrontend {
    DesiredFrontend {
        addr: addr(fe).into(),
        proto: Proto::Tcp,
        kind: FrontendKind::ClusterIp,
        host_ns_only: false,
        scope: crate::model::Scope::All,
        port: ServicePortKey { service: key(svc), port_name: "http".into(), proto: Proto::Tcp },
        service_port: addr(fe).port(),
        backends: backends.iter().map(|b| std::net::SocketAddr::V4(*b)).collect(),
        affinity_timeout: 0,
        external_twin: false,
        source_restricted: false,
    }
}

pub(super) fn frontend(svc: &str, fe: &str, backends: &[&str]) -> DesiredFrontend {
    frontend_of(svc, fe, &backends.iter().map(|b| addr(b)).collect::<Vec<_>>())
}

pub(super) fn service(frontends: Vec<DesiredFrontend>) -> ServiceUpdate {
    ServiceUpdate::Program(DesiredService { frontends, ..DesiredService::default() })
}

pub(super) fn fk(fe: &str) -> FrontendKey {
    frontend_key(addr(fe), Proto::Tcp)
}

/// The backends a frontend resolves to, read through the maps the way the
/// programs do: the frontend value, then its inline backends or its slots.
pub(super) fn resolve(table: &MemoryTable, fe: &str) -> Option<Vec<SocketAddrV4>> {
    let value = table.frontends.get(&fk(fe))?;
    let v4 = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(a) => panic!("IPv6 backend {a} behind an IPv4 frontend"),
    };
    if value.is_inline() {
        return Some(value.inline_backends().iter().map(|b| v4(b.socket_addr())).collect());
    }
    Some(
        (0..value.count())
            .map(|slot| {
                let b = table.slots.get(&slot_ref(value.set_id(), slot)).expect("every slot below count exists");
                v4(b.socket_addr())
            })
            .collect(),
    )
}

/// An IPv4 slot key.
fn slot_ref(set_id: u32, slot: u32) -> SlotRef {
    SlotRef { family: Family::V4, key: SlotKey { set_id, slot } }
}

pub(super) fn writer() -> Writer<MemoryTable> {
    Writer::adopt(MemoryTable::new(ROOMY)).unwrap()
}

#[test]
fn programs_a_service_and_reads_back() {
    for n in [2, INLINE_BACKENDS, LARGE] {
        let mut w = writer();
        let want = backends(1, n);
        let report = w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &want)]))]);
        assert_eq!(report.changed, 1);
        assert_eq!(resolve(w.table(), "10.96.0.10:80").unwrap(), want, "{n} backends");
        assert_eq!(w.table().meta.len(), 1);
        let slots_expected = if n > INLINE_BACKENDS { n } else { 0 };
        assert_eq!(w.table().slots.len(), slots_expected, "{n} backends: inline sets use no slots");
    }
}

#[test]
fn unchanged_desired_state_writes_nothing() {
    for n in [2, LARGE] {
        let mut w = writer();
        let desired = service(vec![frontend_of("web", "10.96.0.10:80", &backends(1, n))]);
        w.apply(vec![(key("web"), desired.clone())]);
        let ops_before = w.table().ops.len();
        let report = w.apply(vec![(key("web"), desired)]);
        assert_eq!(report.changed, 0);
        assert_eq!(w.table().ops.len(), ops_before, "no map writes for an unchanged Service");
    }
}

#[test]
fn inline_backend_change_is_one_frontend_write() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:80", "10.0.0.2:80"])]))]);
    let old_version = w.table().frontends[&fk("10.96.0.10:80")].set_id();
    w.table.ops.clear();
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.2:80", "10.0.0.3:80"])]))]);
    let ops = &w.table().ops;
    assert_eq!(ops.len(), 3, "one atomic map update, then the batch's grace period: {ops:?}");
    assert!(matches!(ops[0], Op::PutFrontend(k, _) if k == fk("10.96.0.10:80")));
    assert_eq!(ops[1..], [Op::GraceAsked, Op::Grace]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert_ne!(value.set_id(), old_version, "a changed set gets a new version (affinity relies on it)");
    assert_eq!(resolve(w.table(), "10.96.0.10:80").unwrap(), vec![addr("10.0.0.2:80"), addr("10.0.0.3:80")]);
}

#[test]
fn slot_set_change_writes_new_set_before_switching_and_deletes_old_after() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(1, LARGE))]))]);
    let old_set = w.table().frontends[&fk("10.96.0.10:80")].set_id();
    w.table.ops.clear();

    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(2, LARGE))]))]);
    let ops = &w.table().ops;
    let switch = ops.iter().position(|op| matches!(op, Op::PutFrontend(..))).expect("frontend switched");
    let new_set = w.table().frontends[&fk("10.96.0.10:80")].set_id();
    assert_ne!(new_set, old_set, "a changed set gets a fresh id");
    // Every slot of the new set is written before the switch...
    let new_slots: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::PutSlot(k, _) if k.key.set_id == new_set))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(new_slots.len(), LARGE);
    assert!(new_slots.iter().all(|i| *i < switch));
    // ...and the old set is deleted only after it.
    let old_deletes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::DeleteSlot(k) if k.key.set_id == old_set))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(old_deletes.len(), LARGE);
    assert!(old_deletes.iter().all(|i| *i > switch));
    assert!(!w.table().slots.keys().any(|k| k.key.set_id == old_set), "old set fully removed");
}

#[test]
fn removed_service_leaves_nothing_behind() {
    for n in [2, LARGE] {
        let mut w = writer();
        let mut fe = frontend_of("web", "10.96.0.10:80", &backends(1, n));
        fe.affinity_timeout = 30;
        w.apply(vec![(key("web"), service(vec![fe]))]);
        assert_eq!(w.table().index.is_empty(), n <= INLINE_BACKENDS, "membership entries only for slot sets");
        let report = w.apply(vec![(key("web"), ServiceUpdate::Remove)]);
        assert_eq!(report.removed, 1);
        let t = w.table();
        assert!(t.frontends.is_empty() && t.slots.is_empty() && t.index.is_empty() && t.meta.is_empty(), "{t:?}");
    }
}

#[test]
fn empty_backends_refuse_without_a_set() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &[])]))]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert_eq!((value.count(), value.set_id()), (0, 0));
    assert!(w.table().slots.is_empty());
}

#[test]
fn frontends_with_equal_backends_share_one_set() {
    let mut w = writer();
    let many = backends(1, LARGE);
    w.apply(vec![(
        key("web"),
        service(vec![frontend_of("web", "10.96.0.10:80", &many), frontend_of("web", "192.0.2.1:80", &many)]),
    )]);
    let t = w.table();
    assert_eq!(t.frontends[&fk("10.96.0.10:80")].set_id(), t.frontends[&fk("192.0.2.1:80")].set_id());
    assert_eq!(t.slots.len(), LARGE, "one set of slots for both");
}

#[test]
fn affinity_on_slot_sets_carries_membership_entries() {
    let mut w = writer();
    let many = backends(1, LARGE);
    let mut fe = frontend_of("web", "10.96.0.10:80", &many);
    fe.affinity_timeout = 10_800;
    w.apply(vec![(key("web"), service(vec![fe]))]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert_eq!(value.affinity_timeout(), 10_800);
    assert!(value.is_indexed());
    let member = IndexKey { set_id: value.set_id(), backend: backend_value(many[1]) };
    assert_eq!(w.table().index.get(&member), Some(&1));

    // Inline sets need none: the program scans the inline backends.
    let mut small = frontend("web", "10.96.0.10:80", &["10.0.0.1:80", "10.0.0.2:80"]);
    small.affinity_timeout = 10_800;
    w.apply(vec![(key("web"), service(vec![small]))]);
    let value = w.table().frontends[&fk("10.96.0.10:80")];
    assert!(!value.is_indexed());
    assert!(w.table().index.is_empty(), "the large set's entries were removed with it");
}

#[test]
fn full_map_refuses_only_that_service_and_keeps_its_old_state() {
    // Room for 3 x LARGE slots: an update needs its old and new set at once.
    let cap = Capacity { frontends: 100, slots: 3 * LARGE as u32, index: 100, meta: 100, reverse: 100 };
    let mut w = Writer::adopt(MemoryTable::new(cap)).unwrap();
    w.apply(vec![
        (key("a"), service(vec![frontend_of("a", "10.96.0.1:80", &backends(1, LARGE))])),
        (key("b"), service(vec![frontend_of("b", "10.96.0.2:80", &backends(2, LARGE))])),
    ]);
    // b changes: 2 x LARGE used + LARGE new fits; a growing as well does not.
    let report = w.apply(vec![(key("a"), service(vec![frontend_of("a", "10.96.0.1:80", &backends(3, 2 * LARGE))]))]);
    assert_eq!(report.refused.len(), 1);
    assert!(matches!(report.refused[0].1, super::Refusal::Full { map: "SVC_BACKENDS", .. }), "{:?}", report.refused);
    assert_eq!(resolve(w.table(), "10.96.0.1:80").unwrap(), backends(1, LARGE), "a keeps serving its old set");
    assert_eq!(resolve(w.table(), "10.96.0.2:80").unwrap(), backends(2, LARGE), "b untouched");
    // Inline sets take no slots: a small Service still fits.
    let report = w.apply(vec![(key("c"), service(vec![frontend("c", "10.96.0.3:80", &["10.0.0.9:80"])]))]);
    assert!(report.refused.iter().all(|(k, _)| k != &key("c")), "{:?}", report.refused);
    // Once b leaves, a's pending update fits and is applied by the retry.
    let report = w.apply(vec![(key("b"), ServiceUpdate::Remove)]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(resolve(w.table(), "10.96.0.1:80").unwrap().len(), 2 * LARGE);
}

#[test]
fn kernel_insert_failure_rolls_back_partial_writes() {
    // The pre-check thinks it fits (it does not know about entries written
    // by someone else), the table then fails mid-way: nothing may remain.
    let table = MemoryTable::new(Capacity { frontends: 100, slots: LARGE as u32, index: 100, meta: 100, reverse: 100 });
    let mut w = Writer::adopt(table).unwrap();
    w.table.slots.insert(slot_ref(999, 0), backend_value(addr("10.0.0.1:80")));
    let report = w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(1, LARGE))]))]);
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
    assert!(report.refused[0].1.to_string().contains("already used by default/a"));
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.1:80")]);
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.2:80")], "b takes over after a is gone");
}

#[test]
fn an_outside_only_twin_follows_the_owner_of_its_address() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "192.0.2.1:80", &["10.0.0.1:80"])]))]);
    // b (externalTrafficPolicy: Local) wants the same address, and its twin.
    let twin = DesiredFrontend { scope: crate::model::Scope::External, ..frontend("b", "192.0.2.1:80", &[]) };
    let report = w.apply(vec![(key("b"), service(vec![frontend("b", "192.0.2.1:80", &["10.0.0.2:80"]), twin]))]);
    assert_eq!(report.refused.len(), 1, "one conflict, reported once: {:?}", report.refused);
    let twin_key = fk("192.0.2.1:80").with_scope(crate::model::Scope::External);
    assert!(!w.table().frontends.contains_key(&twin_key), "outside clients must not be sent to b while a owns it");
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), vec![addr("10.0.0.1:80")]);
}

#[test]
fn adoption_recovers_state_and_removes_stale_only_when_told() {
    let mut w = writer();
    w.apply(vec![
        (key("keep"), service(vec![frontend("keep", "10.96.0.1:80", &["10.0.0.1:80"])])),
        (key("large"), service(vec![frontend_of("large", "10.96.0.4:80", &backends(4, LARGE))])),
        (key("stale"), service(vec![frontend("stale", "10.96.0.2:80", &["10.0.0.2:80"])])),
    ]);
    let mut table = w.table.clone();
    // A crash between writing a set and switching to it leaves an orphan.
    table.slots.insert(slot_ref(4242, 0), backend_value(addr("10.0.0.1:80")));
    table.ops.clear();

    let mut adopted = Writer::adopt(table).unwrap();
    assert!(adopted.table().ops.is_empty(), "adoption itself writes nothing");
    let mut programmed: Vec<_> = adopted.programmed_services().cloned().collect();
    programmed.sort();
    assert_eq!(programmed, vec![key("keep"), key("large"), key("stale")]);

    // The first sync: keep and large are unchanged (no writes), stale is gone.
    let report = adopted.apply(vec![
        (key("keep"), service(vec![frontend("keep", "10.96.0.1:80", &["10.0.0.1:80"])])),
        (key("large"), service(vec![frontend_of("large", "10.96.0.4:80", &backends(4, LARGE))])),
        (key("stale"), ServiceUpdate::Remove),
    ]);
    assert_eq!((report.changed, report.removed), (0, 1));
    assert!(!adopted.table().ops.iter().any(|op| matches!(op, Op::PutFrontend(..) | Op::PutSlot(..))));
    assert!(adopted.table().slots.contains_key(&slot_ref(4242, 0)), "orphans wait for remove_orphans");
    adopted.remove_orphans();
    assert_eq!(adopted.table().slots.len(), LARGE);
    assert_eq!(resolve(adopted.table(), "10.96.0.1:80").unwrap(), vec![addr("10.0.0.1:80")]);
    assert_eq!(resolve(adopted.table(), "10.96.0.4:80").unwrap(), backends(4, LARGE));

    // New sets never reuse an id still present in the adopted maps.
    adopted.apply(vec![(key("new"), service(vec![frontend("new", "10.96.0.3:80", &["10.0.0.3:80"])]))]);
    let mut ids: Vec<u32> = adopted.table().frontends.values().map(FrontendValue::set_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

/// The writes of one frontend key, in order.
pub(super) fn writes_of(w: &Writer<MemoryTable>, fe: &str) -> Vec<Op> {
    let k = fk(fe);
    w.table()
        .ops
        .iter()
        .filter(|op| matches!(op, Op::PutFrontend(key, _) | Op::DeleteFrontend(key) if *key == k))
        .cloned()
        .collect()
}

#[test]
fn an_address_moving_between_services_is_replaced_in_one_write() {
    // The old owner is removed, or keeps only other addresses; the new
    // owner sorts before or after it: every order is one replacement.
    for (old, new, old_keeps_another) in [("old", "new", false), ("b-old", "a-new", false), ("a-old", "b-new", true)] {
        for n in [2, LARGE] {
            let mut w = writer();
            let mut old_frontends = vec![frontend_of(old, "192.0.2.1:80", &backends(1, n))];
            if old_keeps_another {
                old_frontends.push(frontend(old, "192.0.2.9:80", &["10.9.0.1:80"]));
            }
            w.apply(vec![(key(old), service(old_frontends))]);
            w.table.ops.clear();
            let old_after = if old_keeps_another {
                service(vec![frontend(old, "192.0.2.9:80", &["10.9.0.1:80"])])
            } else {
                ServiceUpdate::Remove
            };
            let report = w.apply(vec![
                (key(old), old_after),
                (key(new), service(vec![frontend_of(new, "192.0.2.1:80", &backends(2, n))])),
            ]);
            assert!(report.refused.is_empty(), "{old} -> {new}: {:?}", report.refused);
            let writes = writes_of(&w, "192.0.2.1:80");
            assert_eq!(writes.len(), 1, "{old} -> {new} ({n} backends): one write, no delete: {writes:?}");
            assert!(matches!(writes[0], Op::PutFrontend(..)));
            assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), backends(2, n));
            // The old owner's set is gone after the grace period, nothing leaks.
            let grace = w.table().ops.iter().position(|op| *op == Op::Grace).expect("a grace period");
            let deleted_slots = w.table().ops[grace..].iter().filter(|op| matches!(op, Op::DeleteSlot(_))).count();
            assert_eq!(deleted_slots, if n > INLINE_BACKENDS { n } else { 0 }, "{old} -> {new}");
            assert_eq!(w.table().slots.len(), if n > INLINE_BACKENDS { n } else { 0 });
            // And the new owner really owns it: removing it deletes the address.
            w.apply(vec![(key(new), ServiceUpdate::Remove)]);
            assert!(resolve(w.table(), "192.0.2.1:80").is_none());
        }
    }
}

#[test]
fn a_handed_over_address_nobody_takes_is_deleted() {
    // "new" claims the address but cannot be programmed (no room for its
    // set): the old owner's removal must not leave the address behind.
    let mut w = Writer::adopt(MemoryTable::new(Capacity { slots: LARGE as u32, ..ROOMY })).unwrap();
    w.apply(vec![(key("old"), service(vec![frontend_of("old", "192.0.2.1:80", &backends(1, LARGE))]))]);
    let report = w.apply(vec![
        (key("old"), ServiceUpdate::Remove),
        (key("new"), service(vec![frontend_of("new", "192.0.2.1:80", &backends(2, LARGE))])),
    ]);
    // The old set is retired, not yet deleted, when "new" is first tried:
    // a grace period frees it and "new" fits after all.
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), backends(2, LARGE));

    let mut w = Writer::adopt(MemoryTable::new(Capacity { slots: LARGE as u32, ..ROOMY })).unwrap();
    w.apply(vec![(key("old"), service(vec![frontend_of("old", "192.0.2.1:80", &backends(1, LARGE))]))]);
    let report = w.apply(vec![
        (key("old"), ServiceUpdate::Remove),
        (key("new"), service(vec![frontend_of("new", "192.0.2.1:80", &backends(2, LARGE + 1))])),
    ]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(resolve(w.table(), "192.0.2.1:80").is_none(), "left to a claimant that failed: deleted");
    assert!(w.table().slots.is_empty(), "the old set is gone too");
}

#[test]
fn no_frontend_is_written_twice_without_a_grace_period_between() {
    // Every batch ends with a grace period, and a rollback that restores a
    // key written in the same batch waits for one first.
    let mut w = writer();
    let mut sticky = frontend_of("web", "10.96.0.10:80", &backends(1, LARGE));
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:80"])]))]);
    // The second frontend needs a membership index that the kernel fails
    // to write: the update fails after the first frontend was switched.
    w.table.failing_map = Some("SVC_BE_INDEX");
    w.table.ops.clear();
    sticky.affinity_timeout = 10;
    let mut fe2 = sticky.clone();
    fe2.addr = addr("10.96.0.11:80").into();
    let first = frontend("web", "10.96.0.10:80", &["10.0.0.2:80"]);
    let report = w.apply(vec![(key("web"), service(vec![first, fe2]))]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let mut seen = std::collections::BTreeSet::new();
    for op in &w.table().ops {
        match op {
            Op::Grace => seen.clear(),
            Op::PutFrontend(k, _) | Op::DeleteFrontend(k) => {
                assert!(seen.insert(*k), "{k:?} written twice within one grace period: {:?}", w.table().ops);
            }
            _ => {}
        }
    }
    let writes = writes_of(&w, "10.96.0.10:80");
    // Switched, then restored (and the same again when the refused Service
    // is retried after the batch's removals).
    assert!(writes.len() >= 2 && writes.len().is_multiple_of(2), "switched, then restored: {writes:?}");
    assert_eq!(resolve(w.table(), "10.96.0.10:80").unwrap(), vec![addr("10.0.0.1:80")], "rolled back");
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
    let report = w.apply(vec![(key("dns"), service(vec![tcp, udp(&["10.0.0.1:53", "10.0.0.2:53"])]))]);
    assert!(report.refused.is_empty());
    assert!(w.take_udp_removed().is_empty(), "nothing removed yet");

    // 10.0.0.2 leaves both protocols: only the UDP frontend needs resets.
    w.apply(vec![(
        key("dns"),
        service(vec![frontend("dns", "10.96.0.53:53", &["10.0.0.1:53"]), udp(&["10.0.0.1:53"])]),
    )]);
    let udp_key = frontend_key(addr("10.96.0.53:53"), Proto::Udp);
    assert_eq!(w.take_udp_removed(), vec![(udp_key, vec![backend_value(addr("10.0.0.2:53"))])]);

    // Deleting the Service removes the rest.
    w.apply(vec![(key("dns"), ServiceUpdate::Remove)]);
    assert_eq!(w.take_udp_removed(), vec![(udp_key, vec![backend_value(addr("10.0.0.1:53"))])]);
}

#[test]
fn a_retired_set_is_deleted_only_after_a_grace_period_that_follows_the_switch() {
    let mut w = writer();
    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(1, LARGE))]))]);
    w.table.ops.clear();
    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(2, LARGE))]))]);
    let ops = &w.table().ops;
    let switch = ops.iter().position(|op| matches!(op, Op::PutFrontend(..))).expect("the switch");
    let grace = ops.iter().position(|op| *op == Op::Grace).expect("a grace period");
    let first_delete = ops.iter().position(|op| matches!(op, Op::DeleteSlot(_))).expect("the old set's deletion");
    assert!(switch < grace && grace < first_delete, "switch, grace period, then deletes: {ops:?}");
    assert_eq!(ops.iter().filter(|op| matches!(op, Op::DeleteSlot(_))).count(), LARGE);
}

#[test]
fn a_handed_over_address_never_points_at_a_deleted_set() {
    // Only room for one set: "new" must wait for "old"'s set to go, and
    // that set may not go while the address still points at it.
    let mut w = Writer::adopt(MemoryTable::new(Capacity { slots: LARGE as u32, ..ROOMY })).unwrap();
    w.apply(vec![(key("old"), service(vec![frontend_of("old", "192.0.2.1:80", &backends(1, LARGE))]))]);
    let old_set = w.table().frontends[&fk("192.0.2.1:80")].set_id();
    w.table.ops.clear();
    w.apply(vec![
        (key("old"), ServiceUpdate::Remove),
        (key("new"), service(vec![frontend_of("new", "192.0.2.1:80", &backends(2, LARGE))])),
    ]);
    let ops = &w.table().ops;
    let first_write = ops
        .iter()
        .position(|op| matches!(op, Op::PutFrontend(k, _) | Op::DeleteFrontend(k) if *k == fk("192.0.2.1:80")));
    let first_delete = ops.iter().position(|op| matches!(op, Op::DeleteSlot(s) if s.key.set_id == old_set));
    let (first_write, first_delete) =
        (first_write.expect("the address is written"), first_delete.expect("old set deleted"));
    assert!(first_write < first_delete, "a slot of the set the address points at was deleted first: {ops:?}");
    assert_eq!(resolve(w.table(), "192.0.2.1:80").unwrap(), backends(2, LARGE), "taken over in the end");
}

#[test]
fn an_address_taken_by_an_update_that_fails_is_deleted() {
    let mut w = writer();
    w.apply(vec![(key("old"), service(vec![frontend("old", "192.0.2.9:80", &["10.0.0.1:80"])]))]);
    // "new" takes old's address, but its first frontend (sorting before
    // the taken one) fails in the kernel: the whole update rolls back.
    let mut failing = frontend_of("new", "192.0.2.1:80", &backends(2, LARGE));
    failing.affinity_timeout = 10;
    w.table.failing_map = Some("SVC_BE_INDEX");
    let report = w.apply(vec![
        (key("old"), ServiceUpdate::Remove),
        (key("new"), service(vec![failing, frontend("new", "192.0.2.9:80", &["10.0.0.2:80"])])),
    ]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(resolve(w.table(), "192.0.2.9:80").is_none(), "nobody's address left behind");
    assert_eq!(w.frontend_count(), 0);
}

/// A dual-stack Service is one unit: its IPv6 frontend (10 backends with
/// affinity: past the IPv6 inline limit of 8, so slots and membership
/// entries in the IPv6 maps) and its IPv4 one (inline) are written
/// together, read back the way the programs read them, adopted after a
/// restart without a write, and removed together.
#[test]
fn a_dual_stack_service_in_both_families_maps() {
    let v6_backends: Vec<std::net::SocketAddr> =
        (1..=10u16).map(|i| std::net::SocketAddr::new("fd00:244::1".parse().unwrap(), 8000 + i)).collect();
    let mut fe6 = frontend("web", "10.96.0.10:80", &[]);
    fe6.addr = "[fd00:96::10]:80".parse().unwrap();
    fe6.backends = v6_backends.clone().into();
    fe6.affinity_timeout = 30;
    let fe4 = frontend("web", "10.96.0.10:80", &["10.244.1.2:8080", "10.244.2.2:8080"]);
    let desired = service(vec![fe4, fe6]);
    let mut w = writer();
    let report = w.apply(vec![(key("web"), desired.clone())]);
    assert_eq!((report.changed, report.refused.len()), (1, 0));

    let t = w.table();
    let fk6 = frontend_key("[fd00:96::10]:80".parse::<std::net::SocketAddr>().unwrap(), Proto::Tcp);
    let value = t.frontends[&fk6];
    assert!(!value.is_inline() && value.is_indexed(), "10 IPv6 backends live in slots, indexed for affinity");
    let slots: Vec<std::net::SocketAddr> = (0..value.count())
        .map(|slot| {
            t.slots[&SlotRef { family: Family::V6, key: SlotKey { set_id: value.set_id(), slot } }].socket_addr()
        })
        .collect();
    assert_eq!(slots, v6_backends);
    assert_eq!(t.index.keys().filter(|k| k.backend.family() == Family::V6).count(), 10);
    assert!(t.slots.keys().all(|k| k.family == Family::V6), "the IPv4 set is inline: no IPv4 slots");
    assert_eq!(resolve(t, "10.96.0.10:80").unwrap(), vec![addr("10.244.1.2:8080"), addr("10.244.2.2:8080")]);
    assert_eq!(t.meta.len(), 1, "one service port for both families");

    // A restarted agent adopts both families and writes nothing.
    let mut adopted = Writer::adopt(w.table().clone()).unwrap();
    let ops = adopted.table().ops.len();
    let report = adopted.apply(vec![(key("web"), desired)]);
    assert_eq!(report.changed, 0);
    assert_eq!(adopted.table().ops.len(), ops, "nothing rewritten after adoption");

    adopted.apply(vec![(key("web"), ServiceUpdate::Remove)]);
    let t = adopted.table();
    assert!(t.frontends.is_empty() && t.slots.is_empty() && t.index.is_empty() && t.meta.is_empty(), "{t:?}");
}
