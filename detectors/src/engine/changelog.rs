//! The engine's side of the state changelog: which tokens changed since
//! the last checkpoint, their records, restoring records read back, and
//! forgetting the state of partitions that moved to another instance.

use std::sync::Arc;

use schemas::Origin;

use super::Engine;
use crate::changelog::{Dirty, Entry};
use crate::state::{PartitionId, Position, topic_tag};

impl Engine {
    /// Tracks changed tokens for the state changelog, and skips events
    /// already applied to a token's state (read again after a failover):
    /// their effect is in the state, their decisions in the ledger.
    pub fn with_changelog(mut self) -> Self {
        self.dirty = Some(Dirty::default());
        self
    }

    /// Whether [`with_changelog`](Self::with_changelog) is on.
    pub fn tracks_changes(&self) -> bool {
        self.dirty.is_some()
    }

    /// Tokens changed since their last checkpoint.
    pub fn dirty_tokens(&self) -> usize {
        self.dirty.as_ref().map_or(0, Dirty::len)
    }

    /// The records of the tokens changed since the last checkpoint; they
    /// count as written from now on.
    pub fn checkpoint(&mut self) -> Vec<Entry> {
        let (Some(dirty), store) = (self.dirty.as_mut(), &self.store) else {
            return Vec::new();
        };
        dirty.take(|key| store.get(key).cloned())
    }

    /// Puts restored states in place (replacing what is held for those
    /// tokens), and folds each into its principal's context. Returns how
    /// many.
    pub fn restore(&mut self, entries: Vec<Entry>) -> usize {
        let n = entries.len();
        for Entry {
            issuer,
            token_id,
            principal,
            state,
        } in entries
        {
            let key = self.store.key(&issuer, &token_id);
            if let Some(principal) = principal.as_deref() {
                self.principals
                    .absorb(&issuer, principal, state.last_seen_s, &state);
            }
            self.store.put(key, state);
        }
        n
    }

    /// Forgets the state of tokens read from `partitions` (they moved to
    /// another instance, which restores them). Returns how many.
    pub fn forget_partitions(&mut self, partitions: &[PartitionId]) -> usize {
        let store = &mut self.store;
        if let Some(dirty) = self.dirty.as_mut() {
            dirty.forget(|key| {
                store
                    .get(key)
                    .is_some_and(|s| partitions.contains(&s.position.partition_id()))
            });
        }
        store.forget(|s| partitions.contains(&s.position.partition_id()))
    }
}

/// Where `origin` is, with its topic's tag (`last` caches the last topic's:
/// a batch's origins share one topic name).
pub(super) fn position_of(last: &mut Option<(Arc<str>, u16)>, origin: &Origin) -> Position {
    let tag = match last {
        Some((topic, tag)) if Arc::ptr_eq(topic, &origin.topic) => *tag,
        _ => {
            let tag = topic_tag(&origin.topic);
            *last = Some((Arc::clone(&origin.topic), tag));
            tag
        }
    };
    Position {
        topic: tag,
        partition: origin.partition,
        offset: origin.offset,
    }
}
