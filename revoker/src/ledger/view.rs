//! The ledger as every process sees it: the same records, applied in the
//! same order, give the same answer to "who owns this revocation?".
//!
//! Two kinds of record share the topic, and every record of one token goes
//! to one partition (see [`partition_of`]), so their order is total:
//! - a **claim** (key `~claim/<round>/<owner>/<issuer>/<token_id>`): an
//!   instance asks to own the token's revocation. Round 0 is the first
//!   claim; round n+1 takes over from round n's winner (after a restart, or
//!   from an owner gone silent). The first claim of the next round wins;
//!   later ones of that round lose. Each claim has its own key, so
//!   compaction keeps them all, in order.
//! - a **state** record (key `<issuer>/<token_id>`, the [`Record`]): only
//!   the owner writes one, and a record from anyone else is ignored. Until
//!   the first, a token's winning claim stands for its state: the claim
//!   carries the record, so a new revocation costs one ledger write before
//!   the issuer is called, not two.
//!
//! - a **heartbeat** (key `~alive/<owner>`): every process says it is alive
//!   every few seconds, and that it is gone when it stops. Unfinished
//!   revocations of an owner not heard from for `liveness_timeout` are taken
//!   over; a live owner's are left alone.
//!
//! A writer learns whether it won by reading its own claim back.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Record;

/// The prefix of a claim's key.
pub const CLAIM_PREFIX: &str = "~claim/";
/// The prefix of a heartbeat's key.
pub const ALIVE_PREFIX: &str = "~alive/";

/// An instance's sign of life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub owner: String,
    /// The writer's wall clock.
    pub at_ms: i64,
    /// Written once, at a clean stop.
    #[serde(default)]
    pub gone: bool,
}

impl Heartbeat {
    pub fn key(&self) -> String {
        format!("{ALIVE_PREFIX}{}", self.owner)
    }
}

/// One instance's request to own a token's revocation, with the record it
/// would write, so a claim whose owner died before writing can be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// 0 for the first claim; each takeover adds one.
    pub round: u32,
    pub owner: String,
    pub record: Record,
}

impl Claim {
    pub fn key(&self) -> String {
        format!(
            "{CLAIM_PREFIX}{}/{}/{}/{}",
            self.round, self.owner, self.record.issuer, self.record.token_id
        )
    }
}

/// A record read from the topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Claim(Claim),
    State(Record),
    Alive(Heartbeat),
}

impl Entry {
    /// Parses a message; `None` for anything that is neither kind (a
    /// tombstone, a foreign record).
    pub fn parse(key: Option<&[u8]>, payload: Option<&[u8]>) -> Option<Entry> {
        let payload = payload?;
        if key.is_some_and(|k| k.starts_with(CLAIM_PREFIX.as_bytes())) {
            serde_json::from_slice(payload).ok().map(Entry::Claim)
        } else if key.is_some_and(|k| k.starts_with(ALIVE_PREFIX.as_bytes())) {
            serde_json::from_slice(payload).ok().map(Entry::Alive)
        } else {
            serde_json::from_slice(payload).ok().map(Entry::State)
        }
    }
}

/// The partition of every record of one token: FNV-1a of `issuer/token_id`.
/// Our own hash, not the client's, because claims and state records have
/// different keys yet must share a partition.
pub fn partition_of(issuer: &str, token_id: &str, partitions: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in issuer.bytes().chain([b'/']).chain(token_id.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % partitions.max(1) as u32) as i32
}

/// Who owns a token's revocation: the winning claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub owner: String,
    pub round: u32,
    /// The record the claim carried.
    pub record: Record,
}

/// What applying an entry changed, for the instance that applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// A claim won its round: `owner` now owns the token's revocation.
    Owned {
        key: (String, String),
        owner: String,
    },
    /// A state record was taken in.
    State,
}

/// Owners and latest states by token; see the module docs.
#[derive(Debug, Default)]
pub struct View {
    pub(super) entries: HashMap<(String, String), Record>,
    owners: HashMap<(String, String), Owner>,
    /// The last heartbeat of each owner.
    alive: HashMap<String, Heartbeat>,
    /// When each owner was first seen here (local clock): one whose first
    /// heartbeat has not been read yet counts as alive for a while.
    first_seen_ms: HashMap<String, i64>,
}

impl View {
    pub fn apply(&mut self, entry: Entry, now_ms: i64) -> Change {
        let owner = match &entry {
            Entry::Alive(h) => &h.owner,
            Entry::Claim(c) => &c.owner,
            Entry::State(r) => &r.owner,
        };
        if !owner.is_empty() && !self.first_seen_ms.contains_key(owner) {
            self.first_seen_ms.insert(owner.clone(), now_ms);
        }
        match entry {
            Entry::Alive(h) => {
                self.alive.insert(h.owner.clone(), h);
                Change::Nothing
            }
            Entry::Claim(c) => {
                let key = (c.record.issuer.clone(), c.record.token_id.clone());
                if c.round != self.next_round(&key.0, &key.1) {
                    return Change::Nothing;
                }
                // A winning claim carries the record its owner would write
                // next: until a state record comes, it is the token's state
                // (the owner need not write it again before acting).
                if !self.entries.contains_key(&key) {
                    let mut record = c.record.clone();
                    record.owner = c.owner.clone();
                    self.entries.insert(key.clone(), record);
                }
                self.owners.insert(
                    key.clone(),
                    Owner {
                        owner: c.owner.clone(),
                        round: c.round,
                        record: c.record,
                    },
                );
                Change::Owned {
                    key,
                    owner: c.owner,
                }
            }
            Entry::State(r) => {
                let key = (r.issuer.clone(), r.token_id.clone());
                // Records from before claims existed carry no owner, and a
                // token without claims has none to check against.
                let from_owner = match self.owners.get(&key) {
                    Some(o) => r.owner.is_empty() || r.owner == o.owner,
                    None => true,
                };
                if !from_owner {
                    return Change::Nothing;
                }
                self.entries.insert(key, r);
                Change::State
            }
        }
    }

    /// The round a new claim on this token must name.
    pub fn next_round(&self, issuer: &str, token_id: &str) -> u32 {
        self.owners
            .get(&(issuer.to_string(), token_id.to_string()))
            .map_or(0, |o| o.round + 1)
    }

    pub fn owner(&self, issuer: &str, token_id: &str) -> Option<&Owner> {
        self.owners.get(&(issuer.to_string(), token_id.to_string()))
    }

    /// Claimed or recorded: someone has decided this token's revocation.
    pub fn is_known(&self, issuer: &str, token_id: &str) -> bool {
        let key = (issuer.to_string(), token_id.to_string());
        self.entries.contains_key(&key) || self.owners.contains_key(&key)
    }

    /// Whether `owner` has said it is alive within `timeout_ms` of `now_ms`
    /// and not that it is gone. An owner whose heartbeat has not been read
    /// yet (it may sit on another partition) is alive until `timeout_ms`
    /// after it was first seen; records from before owners existed have
    /// none, and are not.
    pub fn is_alive(&self, owner: &str, now_ms: i64, timeout_ms: i64) -> bool {
        match self.alive.get(owner) {
            Some(h) => !h.gone && now_ms - h.at_ms < timeout_ms,
            None => self
                .first_seen_ms
                .get(owner)
                .is_some_and(|at| now_ms - at < timeout_ms),
        }
    }

    /// The owner of a token's revocation: the winning claim's, or the
    /// record's own for records without claims.
    pub fn owner_name(&self, issuer: &str, token_id: &str) -> Option<&str> {
        let key = (issuer.to_string(), token_id.to_string());
        self.owners
            .get(&key)
            .map(|o| o.owner.as_str())
            .or_else(|| self.entries.get(&key).map(|r| r.owner.as_str()))
    }

    /// Records of tokens claimed by an owner who has not written their
    /// state yet (or died between its claim and its first write).
    pub fn claimed_without_state(&self) -> impl Iterator<Item = &Record> {
        self.owners
            .iter()
            .filter(|(k, _)| !self.entries.contains_key(*k))
            .map(|(_, o)| &o.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::State;

    fn claim(owner: &str, round: u32) -> Entry {
        Entry::Claim(Claim {
            round,
            owner: owner.into(),
            record: Record::new_pending("iss", "t", format!("d-{owner}"), 0),
        })
    }

    fn state(owner: &str, state: State) -> Entry {
        let mut r = Record::new_pending("iss", "t", format!("d-{owner}"), 0);
        r.owner = owner.into();
        r.state = state;
        Entry::State(r)
    }

    #[test]
    fn the_first_claim_of_a_round_wins_and_only_its_owner_writes_state() {
        let mut v = View::default();
        assert!(matches!(v.apply(claim("a", 0), 0), Change::Owned { .. }));
        assert_eq!(v.apply(claim("b", 0), 0), Change::Nothing, "b lost round 0");
        assert_eq!(v.apply(state("b", State::Pending), 0), Change::Nothing);
        assert_eq!(v.apply(state("a", State::Revoked), 0), Change::State);
        assert_eq!(v.entries[&("iss".into(), "t".into())].state, State::Revoked);
        // A takeover names the next round; a stale one is ignored.
        assert_eq!(v.next_round("iss", "t"), 1);
        assert_eq!(v.apply(claim("c", 0), 0), Change::Nothing);
        assert!(matches!(v.apply(claim("c", 1), 0), Change::Owned { .. }));
        assert_eq!(v.apply(claim("b", 1), 0), Change::Nothing);
        assert_eq!(v.owner("iss", "t").unwrap().owner, "c");
        assert_eq!(
            v.apply(state("a", State::Failed), 0),
            Change::Nothing,
            "a was deposed"
        );
    }

    #[test]
    fn a_winning_claim_stands_for_the_state_until_its_owner_writes_one() {
        let mut v = View::default();
        let key = ("iss".to_string(), "t".to_string());
        v.apply(claim("a", 0), 0);
        let pending = &v.entries[&key];
        assert_eq!(
            (pending.state, pending.owner.as_str()),
            (State::Pending, "a")
        );
        // A losing claim changes nothing; the owner's state replaces it.
        v.apply(claim("b", 0), 0);
        assert_eq!(v.entries[&key].owner, "a");
        v.apply(state("a", State::Revoked), 0);
        assert_eq!(v.entries[&key].state, State::Revoked);
        // A takeover's claim keeps the state it takes over.
        v.apply(claim("c", 1), 0);
        assert_eq!(v.entries[&key].state, State::Revoked);
        assert_eq!(v.claimed_without_state().count(), 0);
    }

    #[test]
    fn an_owner_is_alive_until_it_goes_quiet_or_says_it_is_gone() {
        let mut v = View::default();
        let beat = |at_ms, gone| {
            Entry::Alive(Heartbeat {
                owner: "a".into(),
                at_ms,
                gone,
            })
        };
        assert!(!v.is_alive("a", 0, 15_000), "never heard from");
        v.apply(claim("b", 0), 0);
        assert!(
            v.is_alive("b", 14_000, 15_000),
            "its heartbeat may not be read yet"
        );
        assert!(!v.is_alive("b", 15_000, 15_000));
        v.apply(beat(1_000, false), 0);
        assert!(v.is_alive("a", 10_000, 15_000));
        assert!(!v.is_alive("a", 16_000, 15_000), "quiet too long");
        v.apply(beat(12_000, true), 0);
        assert!(!v.is_alive("a", 12_500, 15_000), "stopped cleanly");
    }

    #[test]
    fn records_from_before_claims_are_taken_as_they_are() {
        let mut v = View::default();
        assert_eq!(v.apply(state("", State::Pending), 0), Change::State);
        assert!(v.is_known("iss", "t"));
        assert_eq!(v.next_round("iss", "t"), 0, "a takeover claims round 0");
    }

    #[test]
    fn claims_and_states_parse_by_key() {
        let Entry::Claim(c) = claim("a", 2) else {
            unreachable!()
        };
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(
            Entry::parse(Some(c.key().as_bytes()), Some(&json)),
            Some(Entry::Claim(c))
        );
        assert_eq!(Entry::parse(Some(b"iss/t"), None), None, "tombstone");
    }

    #[test]
    fn a_token_always_maps_to_one_partition() {
        let p = partition_of("iss", "t", 8);
        assert!((0..8).contains(&p));
        assert_eq!(p, partition_of("iss", "t", 8));
        assert_eq!(partition_of("iss", "t", 1), 0);
    }
}
