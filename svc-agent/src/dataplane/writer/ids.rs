//! Id allocation for backend sets and service ports.

use std::collections::HashSet;

/// Hands out ids from `1..=max`, counting upwards and wrapping, never one
/// that is in use. Counting (rather than reusing the lowest free id) keeps
/// a just-retired set id from coming back while a program that read the
/// old frontend value may still be looking up its slots.
#[derive(Debug)]
pub(super) struct IdAllocator {
    next: u32,
    max: u32,
    used: HashSet<u32>,
}

/// The largest service-port id: the programs carry a translation's id with
/// a flag in its top bit (svc-ebpf `lb::Pick`).
pub(super) const MAX_SERVICE_PORT_ID: u32 = (1 << 31) - 1;

impl IdAllocator {
    /// An allocator of any non-zero `u32` that continues after the ids
    /// already in use.
    pub(super) fn with_used(used: impl IntoIterator<Item = u32>) -> Self {
        Self::with_used_up_to(used, u32::MAX)
    }

    /// The same for ids up to `max` (larger ids in use are kept as used).
    pub(super) fn with_used_up_to(used: impl IntoIterator<Item = u32>, max: u32) -> Self {
        let used: HashSet<u32> = used.into_iter().filter(|id| *id != 0).collect();
        let next = used.iter().copied().filter(|id| *id < max).max().map_or(1, |m| m + 1);
        Self { next, max, used }
    }

    /// A fresh id, or `None` when all of `1..=max` are in use.
    pub(super) fn allocate(&mut self) -> Option<u32> {
        // (Ids above `max` adopted in use count too: full a little early
        // at worst, never a search without end.)
        if self.used.len() >= self.max as usize {
            return None;
        }
        loop {
            let id = if self.next == 0 || self.next > self.max { 1 } else { self.next };
            self.next = if id == self.max { 1 } else { id + 1 };
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }

    /// Returns an id.
    pub(super) fn release(&mut self, id: u32) {
        self.used.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_skipping_used_and_zero_and_does_not_reuse_at_once() {
        let mut ids = IdAllocator::with_used([3, 4]);
        assert_eq!(ids.allocate(), Some(5));
        ids.release(5);
        assert_eq!(ids.allocate(), Some(6), "a released id is not handed out again right away");
        let mut wrap = IdAllocator { next: u32::MAX, max: u32::MAX, used: HashSet::from([1]) };
        assert_eq!(wrap.allocate(), Some(u32::MAX));
        assert_eq!(wrap.allocate(), Some(2), "wraps past 0 and skips ids in use");
    }

    #[test]
    fn stays_within_its_maximum() {
        let mut ids = IdAllocator::with_used_up_to([MAX_SERVICE_PORT_ID - 1], MAX_SERVICE_PORT_ID);
        assert_eq!(ids.allocate(), Some(MAX_SERVICE_PORT_ID));
        assert_eq!(ids.allocate(), Some(1), "wraps at the maximum");
        let mut small = IdAllocator::with_used_up_to([1], 2);
        assert_eq!(small.allocate(), Some(2));
        assert_eq!(small.allocate(), None, "full");
    }
}
