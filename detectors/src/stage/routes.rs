//! Which shard each token's events go to: chosen by its first event (the
//! principal's hash when it names one, else the token's) and remembered,
//! so a token never moves between shards while it has state.

use std::hash::{BuildHasher, Hasher};

use schemas::Event;

use crate::config::DetectorsConfig;

/// A fixed seed: the same token goes to the same shard in every run.
const SEED: u64 = 0x746f_6b65_6e77_6174;

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(SEED)
}

/// The shard an event's routing key hashes to (before any remembered
/// choice): its issuer and principal, else its issuer and token id.
pub fn shard_of(event: &Event, shards: usize) -> usize {
    shard_for(
        &event.issuer,
        event.principal.as_deref(),
        &event.token_id,
        shards,
    )
}

fn shard_for(issuer: &str, principal: Option<&str>, token_id: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h = hasher().build_hasher();
    h.write(issuer.as_bytes());
    h.write_u8(0xff);
    match principal {
        Some(principal) => {
            h.write_u8(b'p');
            h.write(principal.as_bytes());
        }
        None => {
            h.write_u8(b't');
            h.write(token_id.as_bytes());
        }
    }
    (h.finish() % shards as u64) as usize
}

fn token_hash(issuer: &str, token_id: &str) -> u64 {
    let mut h = hasher().build_hasher();
    h.write(issuer.as_bytes());
    h.write_u8(0xff);
    h.write(token_id.as_bytes());
    h.finish()
}

#[derive(Clone, Copy)]
struct Route {
    last_s: u32,
    shard: u16,
}

/// The remembered choices, forgotten after the same idle expiry as the
/// tokens' state, and bounded (past the bound a new token is routed by its
/// key alone, and counted).
pub struct Routes {
    map: hashbrown::HashMap<u64, Route, foldhash::fast::FixedState>,
    cap: usize,
    idle_s: u32,
    purge_every_s: u32,
    watermark_s: u32,
    last_purge_s: u32,
    /// New tokens not remembered because the map was full.
    pub unremembered: u64,
}

impl Routes {
    pub fn new(config: &DetectorsConfig) -> Self {
        Routes {
            map: hashbrown::HashMap::with_hasher(hasher()),
            cap: config.max_tokens.saturating_mul(2),
            idle_s: config.idle_expiry.as_secs().min(u64::from(u32::MAX)) as u32,
            purge_every_s: config
                .purge_interval
                .as_secs()
                .clamp(1, u64::from(u32::MAX)) as u32,
            watermark_s: 0,
            last_purge_s: 0,
            unremembered: 0,
        }
    }

    /// The shard of `event`'s token, out of `shards`.
    pub fn shard(&mut self, event: &Event, shards: usize) -> usize {
        if shards <= 1 {
            return 0;
        }
        let now_s = (event.ts_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        if now_s > self.watermark_s {
            self.watermark_s = now_s;
            if now_s.saturating_sub(self.last_purge_s) >= self.purge_every_s {
                self.purge();
            }
        }
        let key = token_hash(&event.issuer, &event.token_id);
        if let Some(route) = self.map.get_mut(&key) {
            route.last_s = route.last_s.max(now_s);
            return usize::from(route.shard) % shards;
        }
        let shard = shard_of(event, shards);
        self.remember(key, shard, now_s);
        shard
    }

    /// The shard of a restored token (its events will follow it there),
    /// chosen as for its first event and remembered.
    pub fn place(
        &mut self,
        issuer: &str,
        token_id: &str,
        principal: Option<&str>,
        last_s: u32,
        shards: usize,
    ) -> usize {
        if shards <= 1 {
            return 0;
        }
        let shard = shard_for(issuer, principal, token_id, shards);
        let key = token_hash(issuer, token_id);
        match self.map.get_mut(&key) {
            Some(route) => {
                *route = Route {
                    last_s,
                    shard: shard as u16,
                }
            }
            None => self.remember(key, shard, last_s),
        }
        shard
    }

    fn remember(&mut self, key: u64, shard: usize, now_s: u32) {
        if self.map.len() < self.cap {
            self.map.insert(
                key,
                Route {
                    last_s: now_s,
                    shard: shard as u16,
                },
            );
        } else {
            self.unremembered += 1;
        }
    }

    fn purge(&mut self) {
        self.last_purge_s = self.watermark_s;
        let horizon = self.watermark_s.saturating_sub(self.idle_s);
        self.map.retain(|_, r| r.last_s >= horizon);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(ts_s: i64, token: &str, principal: Option<&str>) -> Event {
        let mut e = Event::new(ts_s * 1000, token, "oauth", "GET /");
        e.principal = principal.map(str::to_owned);
        e
    }

    #[test]
    fn a_token_stays_where_its_first_event_sent_it() {
        let mut routes = Routes::new(&DetectorsConfig::default());
        // Find a token whose own hash and whose principal's differ.
        let (token, first) = (0..100)
            .map(|i| format!("key-{i}"))
            .map(|t| {
                let shard = routes.shard(&call(0, &t, Some("role/a")), 4);
                (t, shard)
            })
            .find(|(t, shard)| shard_of(&call(0, t, None), 4) != *shard)
            .unwrap();
        // Later events without the principal, or naming another, follow.
        assert_eq!(routes.shard(&call(10, &token, None), 4), first);
        assert_eq!(routes.shard(&call(20, &token, Some("role/b")), 4), first);
    }

    #[test]
    fn choices_are_forgotten_after_the_idle_expiry_and_bounded() {
        let config = DetectorsConfig {
            max_tokens: 2,
            idle_expiry: Duration::from_secs(3600),
            purge_interval: Duration::from_secs(60),
            ..Default::default()
        };
        let mut routes = Routes::new(&config);
        for i in 0..6 {
            routes.shard(&call(0, &format!("t{i}"), None), 4);
        }
        assert_eq!(
            (routes.len(), routes.unremembered),
            (4, 2),
            "cap: 2 × max_tokens"
        );
        routes.shard(&call(1800, "t0", None), 4);
        routes.shard(&call(3700, "t9", None), 4);
        assert_eq!(routes.len(), 2, "t0 (seen at 1800 s) and t9 stay");
    }
}
