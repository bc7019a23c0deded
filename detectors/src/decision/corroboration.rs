//! Corroboration: what a revocation rests on.
//!
//! Findings fall into kinds of evidence. A deterministic finding (scope,
//! binding, expiry, a rule or detector whose action is `revoke`) is a fact
//! and may revoke alone. Statistical findings are guesses: where the call
//! comes from (`network`: travel, new country, new ASN), what makes it
//! (`client`: a new user-agent family), what it does (`behaviour`: volume,
//! a new action class) and scoring rules (`policy`). One kind alone may
//! alert; a revocation needs two independent kinds, in one event or within
//! `corroboration_window` of each other for the token. A stolen token
//! changes at least two of these; a benign change (a new egress, a phone
//! abroad, a new SDK) usually changes one.

use std::collections::HashMap;

use schemas::{Action, DetectorKind, Finding};

use crate::state::TokenKey;

/// A kind of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Basis {
    Deterministic,
    Network,
    Client,
    Behaviour,
    Policy,
}

/// The statistical kinds, remembered per token.
const STATISTICAL: [Basis; 4] = [
    Basis::Network,
    Basis::Client,
    Basis::Behaviour,
    Basis::Policy,
];

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Deterministic => "deterministic",
            Basis::Network => "network",
            Basis::Client => "client",
            Basis::Behaviour => "behaviour",
            Basis::Policy => "policy",
        }
    }

    /// The kind of a finding; `forced` is the action its detector's policy
    /// sets, if any.
    pub fn of(f: &Finding, forced: Option<Action>) -> Basis {
        if forced == Some(Action::Revoke) || f.action == Some(Action::Revoke) {
            return Basis::Deterministic;
        }
        match f.detector {
            DetectorKind::Binding | DetectorKind::Scope | DetectorKind::Expiry => {
                Basis::Deterministic
            }
            DetectorKind::Geo => Basis::Network,
            DetectorKind::Novelty => match f.kind {
                "new_asn" => Basis::Network,
                "new_user_agent" => Basis::Client,
                _ => Basis::Behaviour,
            },
            DetectorKind::Volume => Basis::Behaviour,
            DetectorKind::Policy => Basis::Policy,
        }
    }

    fn slot(self) -> Option<usize> {
        STATISTICAL.iter().position(|&b| b == self)
    }
}

/// A remembered confident finding of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    pub ts_ms: i64,
    /// weight × score.
    pub weighted: f64,
    pub kind: &'static str,
}

/// Confident statistical findings of the last window, per token. Bounded:
/// past `max_tokens`, expired entries are dropped first, then new tokens
/// are not remembered (counted).
pub struct Corroboration {
    window_ms: i64,
    max_tokens: usize,
    recent: HashMap<TokenKey, [Option<Recent>; STATISTICAL.len()]>,
    /// Findings not remembered because the table was full.
    pub dropped: u64,
    /// When a full table was last purged to make room, in event time.
    full_purge_ms: Option<i64>,
    /// Purges made to make room in a full table.
    pub full_purges: u64,
}

impl Corroboration {
    pub fn new(window_ms: i64, max_tokens: usize) -> Self {
        Corroboration {
            window_ms,
            max_tokens: max_tokens.max(1),
            recent: HashMap::new(),
            dropped: 0,
            full_purge_ms: None,
            full_purges: 0,
        }
    }

    /// The token's remembered findings within the window of `now_ms`
    /// whose kind is not in `exclude`.
    pub fn within(&self, key: TokenKey, now_ms: i64, exclude: &[Basis]) -> Vec<(Basis, Recent)> {
        let Some(slots) = self.recent.get(&key) else {
            return Vec::new();
        };
        STATISTICAL
            .iter()
            .zip(slots)
            .filter(|(b, _)| !exclude.contains(b))
            .filter_map(|(&b, r)| r.map(|r| (b, r)))
            .filter(|(_, r)| (now_ms - r.ts_ms).abs() <= self.window_ms)
            .collect()
    }

    /// Remembers a confident statistical finding.
    pub fn remember(&mut self, key: TokenKey, basis: Basis, recent: Recent) {
        let Some(slot) = basis.slot() else { return };
        if !self.recent.contains_key(&key) && self.recent.len() >= self.max_tokens {
            // A purge walks the whole table: at most one per 1/64 of the
            // window, or a flood of new tokens in a full table (input can
            // make one) costs a walk each, quadratic in the table's size.
            let due = self
                .full_purge_ms
                .is_none_or(|at| recent.ts_ms - at >= (self.window_ms / 64).max(1_000));
            if due {
                self.purge(recent.ts_ms);
                self.full_purge_ms = Some(recent.ts_ms);
                self.full_purges += 1;
            }
            if self.recent.len() >= self.max_tokens {
                self.dropped += 1;
                return;
            }
        }
        let slots = self.recent.entry(key).or_default();
        let keep = slots[slot].is_some_and(|old| {
            recent.ts_ms - old.ts_ms <= self.window_ms && old.weighted > recent.weighted
        });
        if !keep {
            slots[slot] = Some(recent);
        }
    }

    /// Forgets what is older than the window at `now_ms`.
    pub fn purge(&mut self, now_ms: i64) {
        let window = self.window_ms;
        self.recent.retain(|_, slots| {
            for s in slots.iter_mut() {
                if s.is_some_and(|r| now_ms - r.ts_ms > window) {
                    *s = None;
                }
            }
            slots.iter().any(Option::is_some)
        });
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of new tokens in a full table within the window: each one
    /// used to walk the whole table (hours for a million tokens); now the
    /// walks are bounded by event time.
    #[test]
    fn a_flood_of_new_tokens_in_a_full_table_purges_rarely() {
        let mut c = Corroboration::new(3_600_000, 1_000);
        for i in 0..200_000u64 {
            let recent = Recent {
                ts_ms: i as i64,
                weighted: 0.9,
                kind: "new_country",
            };
            c.remember(i, Basis::Network, recent);
        }
        assert_eq!(c.len(), 1_000);
        assert_eq!(c.dropped, 199_000);
        assert!(c.full_purges <= 4, "{} purges", c.full_purges);
    }
}
