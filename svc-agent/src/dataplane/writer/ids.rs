//! Id allocation for backend sets and service ports.

use std::collections::HashSet;

/// Hands out non-zero `u32` ids, counting upwards and wrapping, never one
/// that is in use. Counting (rather than reusing the lowest free id) keeps
/// a just-retired set id from coming back while a program that read the
/// old frontend value may still be looking up its slots.
#[derive(Debug, Default)]
pub(super) struct IdAllocator {
    next: u32,
    used: HashSet<u32>,
}

impl IdAllocator {
    /// An allocator that continues after the ids already in use.
    pub(super) fn with_used(used: impl IntoIterator<Item = u32>) -> Self {
        let used: HashSet<u32> = used.into_iter().filter(|id| *id != 0).collect();
        let next = used.iter().max().map_or(1, |m| m.wrapping_add(1).max(1));
        Self { next, used }
    }

    /// A fresh id, or `None` when all 2^32-1 are in use.
    pub(super) fn allocate(&mut self) -> Option<u32> {
        if self.used.len() >= u32::MAX as usize {
            return None;
        }
        loop {
            let id = self.next.max(1);
            self.next = id.wrapping_add(1);
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
        let mut wrap = IdAllocator { next: u32::MAX, used: HashSet::from([1]) };
        assert_eq!(wrap.allocate(), Some(u32::MAX));
        assert_eq!(wrap.allocate(), Some(2), "wraps past 0 and skips ids in use");
    }
}
