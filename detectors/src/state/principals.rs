//! Per-principal context. A principal (an IAM role session, a user, a
//! service account) mints new tokens all the time: an AWS role session's
//! credentials rotate every few hours, a user creates a new PAT. A new
//! token of a known principal starts from the principal's learned
//! context (countries, places, networks, user agents, action classes, and
//! the history length they rest on) instead of from nothing, so the first
//! use of stolen fresh credentials from outside the principal's networks is
//! new, although the key id is.
//!
//! The principals live in a [`TokenStore`] of their own, with its own cap
//! and the same idle expiry and eviction as tokens.

use super::{StoreStats, TokenState, TokenStore};

pub struct Principals {
    store: TokenStore,
    enabled: bool,
}

impl Principals {
    /// At most `max_principals` (0 turns the context off).
    pub fn new(max_principals: usize, idle_expiry_s: u32) -> Self {
        Principals {
            store: TokenStore::new(max_principals, idle_expiry_s),
            enabled: max_principals > 0,
        }
    }

    /// Starts the new token `state` from the principal's context, if the
    /// principal is known. Returns whether it did.
    pub fn inherit(&self, issuer: &str, principal: &str, state: &mut TokenState) -> bool {
        if !self.enabled {
            return false;
        }
        let Some(p) = self.store.get(self.store.key(issuer, principal)) else {
            return false;
        };
        // The token is brand new (nothing learnt yet): its history now
        // starts where the principal's does.
        state.first_seen_s = state.first_seen_s.min(p.first_seen_s);
        let shift_h = hours_between(state.first_seen_s, p.first_seen_s);
        state.events = state.events.saturating_add(p.events);
        state.geo.merge(&p.geo, shift_h);
        state.novelty.merge(&p.novelty, shift_h);
        true
    }

    /// Folds what the token has learnt into its principal's context.
    pub fn absorb(&mut self, issuer: &str, principal: &str, now_s: u32, token: &TokenState) {
        if !self.enabled {
            return;
        }
        let key = self.store.key(issuer, principal);
        let p = self.store.get_or_insert(key, now_s);
        if p.events == 1 {
            // New: the principal's history is this token's.
            p.first_seen_s = token.first_seen_s;
        }
        let shift_h = hours_between(p.first_seen_s, token.first_seen_s);
        p.geo.merge(&token.geo, shift_h);
        p.novelty.merge(&token.novelty, shift_h);
        p.events = p.events.max(token.events);
    }

    /// Drops principals idle for `idle_expiry`.
    pub fn purge_idle(&mut self, now_s: u32) -> usize {
        self.store.purge_idle(now_s)
    }

    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }
}

/// `to`'s hour 0 is `from`'s hour N: N = (to − from) in whole hours.
fn hours_between(from_s: u32, to_s: u32) -> i32 {
    ((i64::from(to_s) - i64::from(from_s)) / 3600) as i32
}
