//! Each caller uid's share of the connection cap: with several allowed uids, one uid holding
//! every slot (stalled or merely many connections) would deny the agent to all the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Connections held per uid, bounded by `per_uid`.
#[derive(Debug)]
pub(super) struct UidSlots {
    held: Mutex<HashMap<u32, usize>>,
    per_uid: usize,
}

/// One connection's place in its uid's share; released on drop.
#[derive(Debug)]
pub(super) struct UidSlot {
    slots: Arc<UidSlots>,
    uid: u32,
}

impl UidSlots {
    /// At most `per_uid` (at least 1) connections per uid.
    pub(super) fn new(per_uid: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(HashMap::new()),
            per_uid: per_uid.max(1),
        })
    }

    /// The bound.
    pub(super) fn per_uid(&self) -> usize {
        self.per_uid
    }

    /// A place for one more connection of `uid`, unless it holds its share already.
    pub(super) fn try_acquire(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(uid).or_insert(0);
        if *count >= self.per_uid {
            return None;
        }
        *count += 1;
        Some(UidSlot {
            slots: Arc::clone(self),
            uid,
        })
    }

    /// Connections `uid` holds now.
    #[cfg(test)]
    fn held(&self, uid: u32) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UidSlots;

    #[test]
    fn each_uid_gets_its_share_and_releases_it() {
        let slots = UidSlots::new(2);
        let a1 = slots.try_acquire(1000);
        let a2 = slots.try_acquire(1000);
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.try_acquire(1000).is_none());
        // Another uid is not affected.
        let b1 = slots.try_acquire(1001);
        assert!(b1.is_some());
        drop(a1);
        assert_eq!(slots.held(1000), 1);
        assert!(slots.try_acquire(1000).is_some());
        drop((a2, b1));
        assert_eq!(slots.held(1000), 0);
        assert_eq!(slots.held(1001), 0);
        assert!(slots.held.lock().map(|h| h.is_empty()).unwrap_or(false));
    }
}
