//! Reverse owners (SVC_BE_REV): who owns a backend, and that an entry
//! never changes while a socket may rely on it.

use std::time::Duration;

use super::{
    ServiceUpdate, Writer,
    tests::{ROOMY, addr, frontend, key, service, writer},
};
use crate::{
    dataplane::{
        encode::backend_value,
        family::{Backend, RevKey},
        memory::MemoryTable,
    },
    model::FrontendKind,
};

/// The frontend SVC_BE_REV names for TCP backend `backend`.
pub(super) fn owner(w: &Writer<MemoryTable>, backend: &str) -> Option<String> {
    let key = RevKey::new(backend_value(std::net::SocketAddr::V4(addr(backend))), svc_common::proto::TCP);
    w.table().reverse.get(&key).map(|f: &Backend| f.socket_addr().to_string())
}

#[test]
fn a_cluster_ip_owns_its_backends_before_a_node_port() {
    let mut w = writer();
    let mut node_port = frontend("web", "192.168.0.1:30080", &["10.1.0.1:80", "10.1.0.2:80"]);
    node_port.kind = FrontendKind::NodePort;
    let cluster_ip = frontend("web", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"]);
    w.apply(vec![(key("web"), service(vec![node_port, cluster_ip]))]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"));
    assert_eq!(owner(&w, "10.1.0.2:80").as_deref(), Some("10.96.0.10:80"));
    assert_eq!(w.reverse_owner_count(), 2);
}

#[test]
fn a_second_service_over_the_backend_does_not_take_it_over() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.1:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"));
    // The owner's Service goes: the entry lingers (b still lists the
    // backend, and a's sockets may be open), unchanged.
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"));
    // Once nobody lists it and the linger is over, it is deleted, and the
    // next frontend to list it owns it.
    w.apply(vec![(key("b"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    assert_eq!(owner(&w, "10.1.0.1:80"), None);
    w.apply(vec![(key("c"), service(vec![frontend("c", "10.96.0.12:80", &["10.1.0.1:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.12:80"));
}

#[test]
fn a_removed_backend_lingers() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"])]))]);
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.2:80"])]))]);
    w.apply(vec![]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"), "the default linger is an hour");
    // Back within the linger: the same entry serves again.
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"])]))]);
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"), "listed again: not deleted");
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    assert_eq!(w.reverse_owner_count(), 0);
    assert!(w.table().reverse.is_empty());
}

#[test]
fn a_restart_keeps_the_pinned_owners() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.1:80", "10.1.0.2:80"])]))]);
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    let mut table = w.table().clone();
    table.ops.clear();
    let mut adopted = Writer::adopt(table).unwrap();
    assert_eq!(owner(&adopted, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"), "a's entry still lingers");
    assert_eq!(owner(&adopted, "10.1.0.2:80").as_deref(), Some("10.96.0.11:80"));
    adopted.set_reverse_linger(Duration::ZERO);
    adopted.apply(vec![(key("b"), ServiceUpdate::Remove)]);
    adopted.apply(vec![]);
    assert!(adopted.table().reverse.is_empty(), "{:?}", adopted.table().reverse);
}

#[test]
fn a_full_map_leaves_backends_without_owner() {
    let mut w = Writer::adopt(MemoryTable::new(crate::dataplane::table::Capacity { reverse: 2, ..ROOMY })).unwrap();
    let update = service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"])]);
    w.apply(vec![(key("a"), update)]);
    assert_eq!(w.reverse_owner_count(), 2);
    assert_eq!(owner(&w, "10.1.0.3:80"), None, "its sockets keep storage");
    assert!(w.pending_services().next().is_none(), "not a refusal: the Service is programmed");
}

#[test]
fn a_batch_the_kernel_stops_halfway_leaves_the_rest_without_owner() {
    // The entries of a batch are written together (one syscall per few
    // thousand): those after the kernel's refusal are not in the map, and
    // the frontend must not claim them as owned.
    let mut table = MemoryTable::new(ROOMY);
    table.reverse_inserts_left = Some(2);
    let mut w = Writer::adopt(table).unwrap();
    let update = service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"])]);
    w.apply(vec![(key("a"), update)]);
    assert_eq!(w.reverse_owner_count(), 2);
    assert_eq!(w.table().reverse.len(), 2);
    assert_eq!(owned_bits_hold(&w), 2, "the unwritten backend's bit is clear");
    assert!(w.pending_services().next().is_none(), "not a refusal: the Service is programmed");
    // The next batch's new backends are written again.
    w.table.reverse_inserts_left = None;
    let update = service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.4:80"])]);
    w.apply(vec![(key("b"), update)]);
    assert_eq!(owner(&w, "10.1.0.4:80").as_deref(), Some("10.96.0.11:80"));
}

#[test]
fn an_entry_is_written_before_the_frontends_and_a_refused_service_leaves_none() {
    // Two frontends' addresses: b takes a's address (a conflict), so b is
    // refused; its backend's entry, written ahead, lingers and goes.
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.10:80", &["10.1.0.9:80"])]))]);
    assert!(w.pending_services().any(|(k, _)| k == &key("b")), "b is refused (address taken)");
    assert_eq!(owner(&w, "10.1.0.9:80").as_deref(), Some("10.96.0.10:80"), "written ahead of the frontend");
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![(key("b"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    assert_eq!(owner(&w, "10.1.0.9:80"), None, "nobody listed it: deleted after the linger");
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"));
}

#[test]
fn a_backend_without_room_gets_no_entry_while_it_is_listed() {
    let mut w = Writer::adopt(MemoryTable::new(crate::dataplane::table::Capacity { reverse: 1, ..ROOMY })).unwrap();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.2:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.2:80"), None, "no room");
    // Room again, but 10.1.0.2 is still listed: direct sockets made while
    // it had no entry are unmarked, so it gets none until nobody lists it.
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    w.apply(vec![(key("c"), service(vec![frontend("c", "10.96.0.12:80", &["10.1.0.2:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.2:80"), None, "still listed since it had no entry");
    w.apply(vec![(key("b"), ServiceUpdate::Remove), (key("c"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    w.apply(vec![(key("d"), service(vec![frontend("d", "10.96.0.13:80", &["10.1.0.2:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.2:80").as_deref(), Some("10.96.0.13:80"));
}

/// The frontend SVC_BE_REV6 names for TCP backend `backend`.
fn owner6(w: &Writer<MemoryTable>, backend: &str) -> Option<String> {
    let key = RevKey::new(backend_value(backend.parse::<std::net::SocketAddr>().unwrap()), svc_common::proto::TCP);
    w.table().reverse.get(&key).map(|f: &Backend| f.socket_addr().to_string())
}

fn frontend6(svc: &str, fe: &str, backends: &[&str]) -> crate::model::DesiredFrontend {
    let mut f = frontend(svc, "10.96.0.99:80", &[]);
    f.addr = fe.parse().unwrap();
    f.backends = backends.iter().map(|b| b.parse().unwrap()).collect();
    f
}

#[test]
fn both_families_have_owners_within_one_capacity() {
    // The mirror is kept per family; the budget is one for both maps.
    let mut w = Writer::adopt(MemoryTable::new(crate::dataplane::table::Capacity { reverse: 2, ..ROOMY })).unwrap();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend6("b", "[fd00::a60:1]:80", &["[fd00:1::1]:80", "[fd00:1::2]:80"])]))]);
    assert_eq!(owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.10:80"));
    assert_eq!(owner6(&w, "[fd00:1::1]:80").as_deref(), Some("[fd00::a60:1]:80"));
    assert_eq!(owner6(&w, "[fd00:1::2]:80"), None, "no room left in the shared budget");
    assert_eq!(w.reverse_owner_count(), 2);
    // Room comes back when an IPv4 entry goes.
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    w.apply(vec![]);
    assert_eq!(w.reverse_owner_count(), 1);
    w.apply(vec![(key("c"), service(vec![frontend6("c", "[fd00::a60:2]:80", &["[fd00:1::3]:80"])]))]);
    assert_eq!(owner6(&w, "[fd00:1::3]:80").as_deref(), Some("[fd00::a60:2]:80"));
    assert_eq!(w.reverse_owner_count(), 2);
}

/// Every `owned` bit in the frontends holds: its backend's entry names
/// that frontend (what lets `connect()` skip the lookup). Returns how
/// many bits are set.
fn owned_bits_hold(w: &Writer<MemoryTable>) -> u32 {
    let table = w.table();
    let mut set = 0;
    for (fk, value) in &table.frontends {
        for (i, backend) in value.inline_backends().iter().enumerate() {
            if value.owned() & (1 << i) == 0 {
                continue;
            }
            set += 1;
            let entry = table.reverse.get(&RevKey::new(*backend, fk.proto()));
            assert_eq!(entry, Some(&fk.as_backend()), "{fk:?} claims backend {i} ({backend:?})");
        }
    }
    set
}

#[test]
fn a_frontend_says_which_backends_it_owns() {
    let mut w = writer();
    let mut node_port = frontend("web", "192.168.0.1:30080", &["10.1.0.1:80", "10.1.0.2:80"]);
    node_port.kind = FrontendKind::NodePort;
    let cluster_ip = frontend("web", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"]);
    w.apply(vec![(key("web"), service(vec![node_port, cluster_ip]))]);
    // The ClusterIP owns both (bits 0 and 1); the node port neither.
    assert_eq!(owned_bits_hold(&w), 2);
    let ip = w.table().frontends.iter().find(|(fk, _)| fk.as_backend().socket_addr().port() == 80).unwrap().1;
    assert_eq!(ip.owned(), 0b11);
}

#[test]
fn owned_bits_never_claim_an_entry_of_another_frontend() {
    let mut w = writer();
    w.set_reverse_linger(Duration::ZERO);
    let steps: Vec<Vec<(super::ServiceKey, ServiceUpdate)>> = vec![
        vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"])]))],
        // b shares one backend (a owns it) and has one of its own.
        vec![(key("b"), service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.1:80", "10.1.0.3:80"])]))],
        // a drops the shared backend: its entry lingers with a's name.
        vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.2:80"])]))],
        vec![(key("b"), service(vec![frontend("b", "10.96.0.11:80", &["10.1.0.3:80", "10.1.0.1:80"])]))],
        // a goes; its address comes back for c, over the shared backend.
        vec![(key("a"), ServiceUpdate::Remove)],
        vec![(key("c"), service(vec![frontend("c", "10.96.0.10:80", &["10.1.0.1:80"])]))],
    ];
    for batch in steps {
        w.apply(batch);
        owned_bits_hold(&w);
    }
    assert!(owned_bits_hold(&w) >= 1, "b owns 10.1.0.3");
}

#[test]
fn a_frontend_left_behind_by_a_failed_delete_is_repaired_before_its_bits_mislead() {
    let mut w = writer();
    w.set_reverse_linger(Duration::ZERO);
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    assert_eq!(owned_bits_hold(&w), 1);
    // The Service goes, but its frontend's delete fails: the map keeps a
    // value claiming an entry the sweep deletes (nobody lists it).
    w.table.failing_frontend_deletes = true;
    w.apply(vec![(key("a"), ServiceUpdate::Remove)]);
    assert_eq!(owner(&w, "10.1.0.1:80"), None, "the entry went");
    assert_eq!(w.table().frontends.len(), 1, "the frontend stayed");
    // The next batch repairs it first.
    w.table.failing_frontend_deletes = false;
    w.apply(vec![]);
    assert!(w.table().frontends.is_empty(), "repaired");
    owned_bits_hold(&w);
}

#[test]
fn adoption_clears_owned_bits_the_pinned_entries_do_not_confirm() {
    let mut w = writer();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80", "10.1.0.2:80"])]))]);
    assert_eq!(owned_bits_hold(&w), 2);
    // Pins whose owner entry for one backend is gone (e.g. a value a
    // failed write left behind).
    let mut table = w.table().clone();
    let gone = RevKey::new(backend_value(std::net::SocketAddr::V4(addr("10.1.0.2:80"))), svc_common::proto::TCP);
    table.reverse.remove(&gone);
    let mut w = Writer::adopt(table).expect("adopts");
    // The first batch rewrites the value with only the confirmed bit.
    w.apply(vec![]);
    assert_eq!(owned_bits_hold(&w), 1);
}
