//! Grace periods that outlast a batch (`MemoryTable::hold_graces`): the
//! next batch waits only where it writes a key again, and a retired set
//! goes only once a grace period asked for after its retirement has ended.

use super::{
    Writer,
    tests::{LARGE, ROOMY, backends, fk, frontend, frontend_of, key, resolve, service, writes_of},
};
use crate::dataplane::{
    memory::{MemoryTable, Op},
    table::Table,
};

fn held() -> Writer<MemoryTable> {
    let mut table = MemoryTable::new(ROOMY);
    table.hold_graces = true;
    Writer::adopt(table).unwrap()
}

/// Position of the last op matching `f`.
fn last(w: &Writer<MemoryTable>, f: impl Fn(&Op) -> bool) -> Option<usize> {
    w.table().ops.iter().rposition(f)
}

#[test]
fn a_batch_does_not_wait_for_the_previous_batchs_grace_period() {
    let mut w = held();
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.1:80", &["10.0.0.1:80"])]))]);
    assert_eq!(w.table().graces_ended(), 0, "the batch asked for one and did not wait");
    w.table.ops.clear();
    // Another Service's key: written at once, nothing waited for.
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.2:80", &["10.0.0.2:80"])]))]);
    assert!(!w.table().ops.contains(&Op::Grace), "no wait: {:?}", w.table().ops);
    assert_eq!(resolve(w.table(), "10.96.0.2:80").unwrap(), vec![super::tests::addr("10.0.0.2:80")]);
}

#[test]
fn a_key_is_written_again_only_after_a_grace_period_asked_for_after_its_last_write() {
    let mut w = held();
    // "a" written, grace period 1 asked; "b" written after it, grace
    // period 2 asked. Only grace period 1 ends.
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.1:80", &["10.0.0.1:80"])]))]);
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.2:80", &["10.0.0.2:80"])]))]);
    w.table.end_graces_through(1);
    w.table.ops.clear();
    // "a" may be written at once: grace period 1 followed its write.
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.1:80", &["10.0.0.3:80"])]))]);
    assert!(!w.table().ops.contains(&Op::Grace), "a's write needed no wait: {:?}", w.table().ops);
    // "b" waits for grace period 2 (1 was asked for before b's write).
    w.table.ops.clear();
    w.apply(vec![(key("b"), service(vec![frontend("b", "10.96.0.2:80", &["10.0.0.4:80"])]))]);
    let grace = last(&w, |op| *op == Op::Grace).expect("b's write waited for a grace period");
    let write = last(&w, |op| matches!(op, Op::PutFrontend(k, _) if *k == fk("10.96.0.2:80"))).unwrap();
    assert!(grace < write, "{:?}", w.table().ops);
    assert!(w.table().graces_ended() >= 2, "the grace period asked for after b's first write");
}

#[test]
fn a_rewrite_in_the_same_batch_asks_for_a_grace_period_and_waits() {
    // A frontend written twice in one batch (a rollback) has no grace
    // period asked for after its first write yet: the writer asks, waits.
    let mut w = held();
    let mut sticky = frontend_of("web", "10.96.0.11:80", &backends(1, LARGE));
    sticky.affinity_timeout = 10;
    w.apply(vec![(key("web"), service(vec![frontend("web", "10.96.0.10:80", &["10.0.0.1:80"])]))]);
    w.table.end_graces();
    w.table.failing_map = Some("SVC_BE_INDEX");
    w.table.ops.clear();
    let first = frontend("web", "10.96.0.10:80", &["10.0.0.2:80"]);
    let report = w.apply(vec![(key("web"), service(vec![first, sticky]))]);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let writes: Vec<usize> = w
        .table()
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::PutFrontend(k, _) if *k == fk("10.96.0.10:80")))
        .map(|(i, _)| i)
        .collect();
    assert!(writes.len() >= 2, "switched, then restored: {:?}", w.table().ops);
    let ops = &w.table().ops[writes[0]..writes[1]];
    let asked = ops.iter().position(|op| *op == Op::GraceAsked).expect("asked after the first write");
    assert!(ops[asked..].contains(&Op::Grace), "and waited for it: {ops:?}");
}

#[test]
fn a_retired_set_stays_until_its_grace_period_has_ended() {
    let mut w = held();
    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(1, LARGE))]))]);
    w.table.end_graces();
    w.reap();
    w.apply(vec![(key("web"), service(vec![frontend_of("web", "10.96.0.10:80", &backends(2, LARGE))]))]);
    // Switched at once; the old set is still there for a program that
    // copied the old value.
    assert_eq!(resolve(w.table(), "10.96.0.10:80").unwrap(), backends(2, LARGE));
    assert_eq!(w.table().slots.len(), 2 * LARGE, "the retired set waits for its grace period");
    assert!(w.awaits_grace());
    w.reap();
    assert_eq!(w.table().slots.len(), 2 * LARGE, "nothing ended, nothing deleted");
    w.table.end_graces();
    w.reap();
    assert_eq!(w.table().slots.len(), LARGE, "deleted once it ended");
    assert!(!w.awaits_grace());
    assert!(writes_of(&w, "10.96.0.10:80").len() == 2, "one write per batch");
}

#[test]
fn a_deleted_owner_entry_comes_back_only_after_a_grace_period_asked_for_after_the_delete() {
    let mut w = held();
    w.set_reverse_linger(std::time::Duration::ZERO);
    w.apply(vec![(key("a"), service(vec![frontend("a", "10.96.0.10:80", &["10.1.0.1:80"])]))]);
    // With no linger the removal's batch deletes the entry, stamped with
    // the last grace period asked for before it.
    let before_delete = w.table().graces_asked();
    w.apply(vec![(key("a"), crate::dataplane::writer::ServiceUpdate::Remove)]);
    assert_eq!(super::reverse_tests::owner(&w, "10.1.0.1:80"), None, "deleted once its linger was over");
    // Listed again at once: the entry is re-created only after a grace
    // period asked for after the delete (a reader may hold the element).
    w.apply(vec![(key("c"), service(vec![frontend("c", "10.96.0.12:80", &["10.1.0.1:80"])]))]);
    assert_eq!(super::reverse_tests::owner(&w, "10.1.0.1:80").as_deref(), Some("10.96.0.12:80"));
    assert!(w.table().graces_ended() > before_delete, "waited for a grace period after the delete");
}

#[test]
fn udp_removals_are_handed_out_once_their_batchs_grace_period_has_ended() {
    let mut w = held();
    let udp = |backends: &[&str]| {
        let mut fe = frontend("dns", "10.96.0.53:53", backends);
        fe.proto = crate::model::Proto::Udp;
        fe.port.proto = crate::model::Proto::Udp;
        fe
    };
    w.apply(vec![(key("dns"), service(vec![udp(&["10.0.0.1:53", "10.0.0.2:53"])]))]);
    w.apply(vec![(key("dns"), service(vec![udp(&["10.0.0.1:53"])]))]);
    // A program that copied the old value may still connect a socket to
    // 10.0.0.2 until the grace period ends: the reset waits for it.
    assert!(w.take_udp_removed().is_empty(), "held until the grace period ends");
    assert!(w.awaits_grace());
    w.table.end_graces();
    let removed = w.take_udp_removed();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(
        removed[0].1,
        vec![crate::dataplane::encode::backend_value(std::net::SocketAddr::V4(super::tests::addr("10.0.0.2:53")))]
    );
}
