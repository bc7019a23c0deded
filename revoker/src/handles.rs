//! The secret handle store: raw token secrets, in memory only, for issuers
//! that need the secret itself to revoke (RFC 7009, GitHub). Bounded by
//! count and TTL; never logged, serialized or written anywhere.
//!
//! A record may name a `token_id` and carry a `token`. If two records give
//! one token id two different secrets, one of them lies (a forged line, a
//! confused gateway), and sending either to the issuer could revoke the
//! wrong token: the id is then held as a conflict, with no secret, until
//! the TTL passes. A revocation for it waits as `awaiting_secret`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use schemas::Secret;

/// What a token id holds.
#[derive(Clone)]
enum Slot {
    Held(Secret),
    /// Two different secrets were seen for it.
    Conflict,
}

/// What [`HandleStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Held,
    /// A different secret than the one held, or a conflict already: the id
    /// now holds none.
    Conflict,
}

pub struct HandleStore {
    ttl: Duration,
    max_entries: usize,
    secrets: HashMap<(String, String), (Slot, Instant)>,
    order: VecDeque<((String, String), Instant)>,
}

impl std::fmt::Debug for HandleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HandleStore({} secrets, redacted)", self.secrets.len())
    }
}

impl HandleStore {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        HandleStore {
            ttl,
            max_entries: max_entries.max(1),
            secrets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers the secret of (issuer, token_id) as of `now`, unless
    /// another secret is held for it (see the module docs).
    pub fn put(&mut self, issuer: &str, token_id: &str, secret: Secret, now: Instant) -> Put {
        self.expire(now);
        let key = (issuer.to_string(), token_id.to_string());
        let slot = match self.secrets.get(&key) {
            Some((Slot::Held(held), _)) if held.expose() != secret.expose() => Slot::Conflict,
            Some((Slot::Conflict, _)) => Slot::Conflict,
            _ => Slot::Held(secret),
        };
        let put = match slot {
            Slot::Held(_) => Put::Held,
            Slot::Conflict => Put::Conflict,
        };
        self.secrets.insert(key.clone(), (slot, now));
        self.order.push_back((key, now));
        self.expire(now);
        while self.secrets.len() > self.max_entries {
            match self.order.pop_front() {
                Some((k, at)) => {
                    if self.secrets.get(&k).is_some_and(|(_, t)| *t == at) {
                        self.secrets.remove(&k);
                    }
                }
                None => break,
            }
        }
        // The order queue holds one entry per put; keep it from growing
        // past twice the live entries when the same tokens repeat.
        if self.order.len() > 2 * self.max_entries.max(self.secrets.len()) {
            let secrets = &self.secrets;
            self.order
                .retain(|(k, at)| secrets.get(k).is_some_and(|(_, t)| t == at));
        }
        put
    }

    pub fn get(&mut self, issuer: &str, token_id: &str, now: Instant) -> Option<Secret> {
        self.expire(now);
        match self
            .secrets
            .get(&(issuer.to_string(), token_id.to_string()))
        {
            Some((Slot::Held(s), _)) => Some(s.clone()),
            _ => None,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((k, at)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            if self.secrets.get(k).is_some_and(|(_, t)| t == at) {
                self.secrets.remove(k);
            }
            self.order.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_ttl_and_never_printed() {
        let t0 = Instant::now();
        let mut h = HandleStore::new(Duration::from_secs(60), 2);
        h.put("gh", "a", Secret::new("ghp_CANARY_a".into()), t0);
        h.put(
            "gh",
            "b",
            Secret::new("ghp_CANARY_b".into()),
            t0 + Duration::from_secs(1),
        );
        h.put(
            "gh",
            "c",
            Secret::new("ghp_CANARY_c".into()),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(h.len(), 2);
        assert!(
            h.get("gh", "a", t0 + Duration::from_secs(3)).is_none(),
            "oldest evicted at the cap"
        );
        assert_eq!(
            h.get("gh", "b", t0 + Duration::from_secs(3))
                .map(|s| s.expose().to_string()),
            Some("ghp_CANARY_b".into())
        );
        assert!(
            h.get("gh", "b", t0 + Duration::from_secs(61)).is_none(),
            "expired"
        );
        assert!(!format!("{h:?}").contains("CANARY"));
    }

    /// Issue 11, section 5: a record naming another token's id with its own
    /// secret must not replace that token's secret. Before, the last one
    /// won, and the issuer would have been sent the wrong token.
    #[test]
    fn a_second_different_secret_for_one_id_is_a_conflict_not_a_replacement() {
        let t0 = Instant::now();
        let mut h = HandleStore::new(Duration::from_secs(60), 10);
        assert_eq!(
            h.put("gh", "victim", Secret::new("real".into()), t0),
            Put::Held
        );
        assert_eq!(
            h.put("gh", "victim", Secret::new("real".into()), t0),
            Put::Held
        );
        assert_eq!(
            h.put("gh", "victim", Secret::new("forged".into()), t0),
            Put::Conflict
        );
        assert!(h.get("gh", "victim", t0).is_none(), "neither is sent");
        assert_eq!(
            h.put("gh", "victim", Secret::new("real".into()), t0),
            Put::Conflict
        );
        assert!(h.get("gh", "victim", t0 + Duration::from_secs(1)).is_none());
        // Once the TTL has passed, the id may hold a secret again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            h.put("gh", "victim", Secret::new("real".into()), later),
            Put::Held
        );
        assert!(h.get("gh", "victim", later).is_some());
    }

    #[test]
    fn refreshing_a_secret_keeps_it_alive() {
        let t0 = Instant::now();
        let mut h = HandleStore::new(Duration::from_secs(60), 10);
        for i in 0..100 {
            h.put(
                "gh",
                "a",
                Secret::new("s".into()),
                t0 + Duration::from_secs(i),
            );
        }
        assert!(h.get("gh", "a", t0 + Duration::from_secs(150)).is_some());
        assert!(h.order.len() <= 20);
    }
}
