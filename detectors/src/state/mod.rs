//! Per-token state: a dense slab of [`TokenState`]s plus a hash index, with
//! a hard cap on tokens, idle expiry, and counted evictions.
//!
//! The shape follows mini-redis's `db.rs` (a map plus expiry plus a purge),
//! but the "expiry index" is the `last_seen` stamp in each slot and the
//! purge is a sweep: an ordered index would cost more than the 256 bytes a
//! token may use in total. At the cap, a new token evicts the idlest of a
//! few sampled tokens (Redis's approximated LRU).
//!
//! - [`window`]: the sliding window and baseline of the volume detector.
//! - [`principals`]: what a principal's tokens have in common.
//! - [`codec`]: the versioned binary form of a [`TokenState`], for the
//!   state changelog.

pub mod codec;
pub mod principals;
pub mod window;

use std::hash::{BuildHasher, Hash, Hasher};

/// Seeded per process (token ids come from input) and much faster than
/// SipHash; the quality variant, as the 64-bit hash is the token's key.
type RandomState = foldhash::quality::RandomState;

use hashbrown::HashTable;

use crate::geo::GeoState;
use crate::novelty::NoveltyState;
use crate::volume::VolumeState;

/// Everything the detectors remember about one token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenState {
    /// Event time of the first and the latest event, epoch seconds.
    pub first_seen_s: u32,
    pub last_seen_s: u32,
    /// Events seen (saturating): how much history "new" rests on.
    pub events: u32,
    pub volume: VolumeState,
    pub geo: GeoState,
    pub novelty: NoveltyState,
    /// Where the last event applied to this state was read.
    pub position: Position,
}

/// A Kafka partition, by a stable tag of its topic's name and its number.
pub type PartitionId = (u16, i32);

/// Where in Kafka an event was read: a topic tag, partition and offset.
/// The state changelog keeps it with each token, so an event read again
/// after a failover (at or before the position, on the same partition) is
/// known as already applied and is not counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub topic: u16,
    pub partition: i32,
    pub offset: i64,
}

impl Default for Position {
    /// Nowhere: covers no event.
    fn default() -> Self {
        Position {
            topic: 0,
            partition: -1,
            offset: -1,
        }
    }
}

impl Position {
    pub fn new(topic: &str, partition: i32, offset: i64) -> Self {
        Position {
            topic: topic_tag(topic),
            partition,
            offset,
        }
    }

    pub fn partition_id(&self) -> PartitionId {
        (self.topic, self.partition)
    }

    /// Whether an event at `other` was already applied: same partition, at
    /// or before this position.
    pub fn covers(&self, other: &Position) -> bool {
        self.offset >= 0
            && other.offset >= 0
            && self.partition_id() == other.partition_id()
            && other.offset <= self.offset
    }
}

/// A stable 16-bit tag of a topic name (FNV-1a, folded): the same in every
/// process and version, as it is stored in the changelog.
pub fn topic_tag(topic: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

impl TokenState {
    fn new(now_s: u32) -> Self {
        TokenState {
            first_seen_s: now_s,
            last_seen_s: now_s,
            ..Default::default()
        }
    }

    /// Seconds since the token was first seen.
    pub fn age_s(&self, now_s: u32) -> u32 {
        now_s.saturating_sub(self.first_seen_s)
    }
}

/// Identifies a token: a keyed 64-bit hash of (issuer, token_id). The key
/// is random per process, so ids cannot be crafted to collide.
pub type TokenKey = u64;

struct Slot {
    key: TokenKey,
    state: TokenState,
}

/// Counters of the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub tokens: usize,
    /// Tokens dropped to make room under the cap.
    pub evicted: u64,
    /// Tokens dropped after `idle_expiry` without events.
    pub expired: u64,
}

/// The token store.
pub struct TokenStore {
    hasher: RandomState,
    index: HashTable<u32>,
    slots: Vec<Slot>,
    max_tokens: usize,
    idle_expiry_s: u32,
    evicted: u64,
    expired: u64,
    rng: u64,
}

const EVICTION_SAMPLES: usize = 8;

impl TokenStore {
    pub fn new(max_tokens: usize, idle_expiry_s: u32) -> Self {
        TokenStore {
            hasher: RandomState::default(),
            index: HashTable::new(),
            slots: Vec::new(),
            max_tokens: max_tokens.max(1),
            idle_expiry_s,
            evicted: 0,
            expired: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn key(&self, issuer: &str, token_id: &str) -> TokenKey {
        let mut h = self.hasher.build_hasher();
        issuer.hash(&mut h);
        token_id.hash(&mut h);
        h.finish()
    }

    fn find(&self, key: TokenKey) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(key, |&i| slots[i as usize].key == key)
            .map(|&i| i as usize)
    }

    pub fn get(&self, key: TokenKey) -> Option<&TokenState> {
        self.find(key).map(|i| &self.slots[i].state)
    }

    /// The token's state, created if new (evicting one at the cap). Marks
    /// it seen at `now_s` if that is later than its last event.
    pub fn get_or_insert(&mut self, key: TokenKey, now_s: u32) -> &mut TokenState {
        self.touch(key, now_s).0
    }

    /// Like [`get_or_insert`](Self::get_or_insert), also returning when the
    /// token was last seen before this call (`None` if it is new).
    pub fn touch(&mut self, key: TokenKey, now_s: u32) -> (&mut TokenState, Option<u32>) {
        let (i, previous) = match self.find(key) {
            Some(i) => (i, Some(self.slots[i].state.last_seen_s)),
            None => {
                if self.slots.len() >= self.max_tokens {
                    let victim = self.pick_victim();
                    self.remove_at(victim);
                    self.evicted += 1;
                }
                let i = self.slots.len();
                self.slots.push(Slot {
                    key,
                    state: TokenState::new(now_s),
                });
                let slots = &self.slots;
                self.index
                    .insert_unique(key, i as u32, |&j| slots[j as usize].key);
                (i, None)
            }
        };
        let state = &mut self.slots[i].state;
        state.last_seen_s = state.last_seen_s.max(now_s);
        state.events = state.events.saturating_add(1);
        (state, previous)
    }

    /// The idlest of a few pseudo-randomly sampled tokens.
    fn pick_victim(&mut self) -> usize {
        let n = self.slots.len();
        (0..EVICTION_SAMPLES.min(n))
            .map(|_| {
                // xorshift64: deterministic, so replays evict the same tokens.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                (self.rng % n as u64) as usize
            })
            .min_by_key(|&i| self.slots[i].state.last_seen_s)
            .unwrap_or(0)
    }

    fn remove_at(&mut self, i: usize) {
        let key = self.slots[i].key;
        if let Ok(entry) = self.index.find_entry(key, |&j| j as usize == i) {
            entry.remove();
        }
        let last = self.slots.len() - 1;
        self.slots.swap_remove(i);
        if i != last {
            let moved = self.slots[i].key;
            if let Some(j) = self.index.find_mut(moved, |&j| j as usize == last) {
                *j = i as u32;
            }
        }
    }

    /// Puts a restored state in place of whatever the store holds for
    /// `key` (evicting one token at the cap if it is new).
    pub fn put(&mut self, key: TokenKey, state: TokenState) {
        let now_s = state.last_seen_s;
        let slot = self.touch(key, now_s).0;
        *slot = state;
    }

    /// Drops every token `forget` says to. Returns how many.
    pub fn forget(&mut self, mut forget: impl FnMut(&TokenState) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            if forget(&self.slots[i].state) {
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Drops tokens with no event for `idle_expiry`. Returns how many.
    pub fn purge_idle(&mut self, now_s: u32) -> usize {
        let cutoff = now_s.saturating_sub(self.idle_expiry_s);
        let removed = self.forget(|s| s.last_seen_s < cutoff);
        self.expired += removed as u64;
        removed
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tokens: self.slots.len(),
            evicted: self.evicted,
            expired: self.expired,
        }
    }

    /// Bytes held per token by the store's own structures (slab and index
    /// capacity), excluding allocator overhead.
    pub fn bytes_per_token(&self) -> f64 {
        self.table_bytes() as f64 / self.slots.len().max(1) as f64
    }

    /// Bytes the slab and the index have allocated: what a flood of new
    /// tokens would grow if the cap did not hold.
    pub fn table_bytes(&self) -> usize {
        let slab = self.slots.capacity() * std::mem::size_of::<Slot>();
        let index = self.index.capacity() * (std::mem::size_of::<u32>() + 1);
        slab + index
    }
}

#[cfg(test)]
mod tests;
