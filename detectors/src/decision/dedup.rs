//! Alert deduplication per (token, detector): the first hit goes out at
//! once; repeats within the window are counted and reported with the next
//! decision that goes out, or in a summary when the window closes. Nothing
//! is dropped without being counted.

use std::collections::HashMap;

use schemas::{Action, DetectorKind, Finding, Repeats};

use crate::state::TokenKey;

pub struct Entry {
    /// When the current window opened (the last emission), ms.
    pub opened_ms: i64,
    /// The strongest action emitted in this window.
    pub action: Action,
    /// Repeats since the last emission.
    pub repeats: u64,
    pub first_repeat_ms: i64,
    pub last_repeat_ms: i64,
    /// For the closing summary.
    pub issuer: String,
    pub token_id: String,
    pub principal: Option<String>,
    pub last_finding: Option<Finding>,
}

/// A closed window with repeats to report.
pub struct Summary {
    pub detector: DetectorKind,
    pub entry: Entry,
}

pub struct Dedup {
    window_ms: i64,
    entries: HashMap<(TokenKey, DetectorKind), Entry>,
    /// Entries kept at most; past it the oldest windows close early.
    max_entries: usize,
}

impl Dedup {
    pub fn new(window_ms: i64, max_entries: usize) -> Self {
        Dedup {
            window_ms,
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// Whether a finding of `detector` for `token` with `action` is new
    /// (emit it) or a repeat within the window (count it).
    pub fn is_new(
        &self,
        token: TokenKey,
        detector: DetectorKind,
        action: Action,
        now_ms: i64,
    ) -> bool {
        match self.entries.get(&(token, detector)) {
            Some(e) => now_ms - e.opened_ms >= self.window_ms || action > e.action,
            None => true,
        }
    }

    /// Records an emission: opens a fresh window and returns the repeats
    /// folded into this one, if any.
    pub fn emitted(
        &mut self,
        token: TokenKey,
        detector: DetectorKind,
        action: Action,
        now_ms: i64,
        seed: Entry,
    ) -> Option<Repeats> {
        let previous = self.entries.insert(
            (token, detector),
            Entry {
                opened_ms: now_ms,
                action,
                ..seed
            },
        );
        previous.filter(|e| e.repeats > 0).map(|e| Repeats {
            count: e.repeats,
            first_ts_ms: e.first_repeat_ms,
            last_ts_ms: e.last_repeat_ms,
        })
    }

    /// Counts a suppressed repeat.
    pub fn repeated(
        &mut self,
        token: TokenKey,
        detector: DetectorKind,
        now_ms: i64,
        finding: &Finding,
    ) {
        if let Some(e) = self.entries.get_mut(&(token, detector)) {
            if e.repeats == 0 {
                e.first_repeat_ms = now_ms;
            }
            e.repeats += 1;
            e.last_repeat_ms = e.last_repeat_ms.max(now_ms);
            e.last_finding = Some(finding.clone());
        }
    }

    /// Closes windows older than `window_ms` (and the oldest ones past the
    /// entry cap) and returns those with repeats to report.
    pub fn close_expired(&mut self, now_ms: i64) -> Vec<Summary> {
        let window = self.window_ms;
        let mut cutoff = now_ms - window;
        if self.entries.len() > self.max_entries {
            let mut opened: Vec<i64> = self.entries.values().map(|e| e.opened_ms).collect();
            let excess = self.entries.len() - self.max_entries;
            opened.select_nth_unstable(excess);
            cutoff = cutoff.max(opened[excess]);
        }
        let closing: Vec<(TokenKey, DetectorKind)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.opened_ms < cutoff || now_ms - e.opened_ms >= window)
            .map(|(k, _)| *k)
            .collect();
        closing
            .into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|e| (k.1, e)))
            .filter(|(_, e)| e.repeats > 0)
            .map(|(detector, entry)| Summary { detector, entry })
            .collect()
    }
}
