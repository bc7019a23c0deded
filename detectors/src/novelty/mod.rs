//! Novelty: a new ASN, user-agent family or action class for a token, once
//! its own history is long enough ([`crate::learning`]), with a confidence
//! that grows with that history. Each kind of item is a small fixed-size set with a
//! last-seen stamp per item; items unseen for `forget_after` are forgotten,
//! and a full set drops its least recently seen item.

mod classify;

use std::time::Duration;

pub use classify::{action_class, user_agent_family};
use schemas::{DetectorKind, Evidence, Finding};
use serde::{Deserialize, Serialize};

use crate::detector::{Detector, Observation};
use crate::learning::LearningConfig;
use crate::state::TokenState;

/// `[detectors.novelty]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoveltyConfig {
    /// Run this detector.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An item not seen for this long is forgotten; seeing it again is new.
    #[serde(default = "default_forget", with = "humantime_serde")]
    pub forget_after: Duration,
    /// Report a new autonomous system (needs the ASN database).
    #[serde(default = "yes")]
    pub asn: bool,
    /// Report a new user-agent family (`aws-cli`, `chrome`, `python-requests`).
    #[serde(default = "yes")]
    pub user_agent: bool,
    /// Report a new action class (`GET /v1/orders`, `s3:Get`, `repo.download_zip`).
    #[serde(default = "yes")]
    pub action_class: bool,
}

fn yes() -> bool {
    true
}
fn default_forget() -> Duration {
    Duration::from_secs(30 * 86_400)
}

impl Default for NoveltyConfig {
    fn default() -> Self {
        NoveltyConfig {
            enabled: true,
            forget_after: default_forget(),
            asn: true,
            user_agent: true,
            action_class: true,
        }
    }
}

impl NoveltyConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.forget_after < Duration::from_secs(3600) {
            p.push("detectors.novelty.forget_after: at least 1h".into());
        }
        if self.forget_after.as_secs() / 3600 > u64::from(u16::MAX) {
            p.push("detectors.novelty.forget_after: at most 7 years".into());
        }
        p
    }
}

/// A small set of item digests with last-seen stamps (hours since the
/// token's first event). Digest 0 marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemSet<const N: usize> {
    items: [u32; N],
    seen_h: [u16; N],
}

impl<const N: usize> Default for ItemSet<N> {
    fn default() -> Self {
        ItemSet {
            items: [0; N],
            seen_h: [0; N],
        }
    }
}

impl<const N: usize> ItemSet<N> {
    /// Records `item` at hour `now_h`. Returns true if it was not known
    /// (never seen, or forgotten after `forget_h` hours).
    pub fn touch(&mut self, item: u32, now_h: u16, forget_h: u16) -> bool {
        let item = item.max(1);
        for i in 0..N {
            if self.items[i] != 0 && now_h.saturating_sub(self.seen_h[i]) > forget_h {
                self.items[i] = 0;
            }
        }
        if let Some(i) = self.items.iter().position(|&x| x == item) {
            self.seen_h[i] = self.seen_h[i].max(now_h);
            return false;
        }
        let slot = self
            .items
            .iter()
            .position(|&x| x == 0)
            .unwrap_or_else(|| (0..N).min_by_key(|&i| self.seen_h[i]).unwrap_or(0));
        self.items[slot] = item;
        self.seen_h[slot] = now_h;
        true
    }

    pub fn len(&self) -> usize {
        self.items.iter().filter(|&&x| x != 0).count()
    }

    /// Adds `other`'s items, their hours moved by `shift_h` (other's hour 0
    /// is this set's hour `shift_h`); a full set keeps the most recent.
    pub fn merge(&mut self, other: &Self, shift_h: i32) {
        for (&item, &seen) in other.items.iter().zip(&other.seen_h) {
            if item == 0 {
                continue;
            }
            let seen = (i32::from(seen) + shift_h).clamp(0, i32::from(u16::MAX)) as u16;
            if let Some(i) = self.items.iter().position(|&x| x == item) {
                self.seen_h[i] = self.seen_h[i].max(seen);
                continue;
            }
            let slot = self
                .items
                .iter()
                .position(|&x| x == 0)
                .unwrap_or_else(|| (0..N).min_by_key(|&i| self.seen_h[i]).unwrap_or(0));
            if self.items[slot] == 0 || self.seen_h[slot] < seen {
                self.items[slot] = item;
                self.seen_h[slot] = seen;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-token novelty state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoveltyState {
    asns: ItemSet<4>,
    user_agents: ItemSet<3>,
    action_classes: ItemSet<6>,
}

impl NoveltyState {
    /// Adds another state's items (see [`ItemSet::merge`]).
    pub fn merge(&mut self, other: &Self, shift_h: i32) {
        self.asns.merge(&other.asns, shift_h);
        self.user_agents.merge(&other.user_agents, shift_h);
        self.action_classes.merge(&other.action_classes, shift_h);
    }

    /// How many items of each kind are known, for the admin API.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "asns": self.asns.len(),
            "user_agent_families": self.user_agents.len(),
            "action_classes": self.action_classes.len(),
        })
    }
}

/// FNV-1a, 32 bits: a stable digest of a short string.
pub fn digest(text: &str) -> u32 {
    text.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub struct NoveltyDetector {
    config: NoveltyConfig,
    learning: LearningConfig,
    forget_h: u16,
}

impl NoveltyDetector {
    pub fn new(config: NoveltyConfig, learning: LearningConfig) -> Self {
        let forget_h = (config.forget_after.as_secs() / 3600).min(u64::from(u16::MAX)) as u16;
        NoveltyDetector {
            config,
            learning,
            forget_h,
        }
    }
}

impl Detector for NoveltyDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Novelty
    }

    fn stateful(&self) -> bool {
        true
    }

    fn observe(&self, obs: &Observation<'_>, state: &mut TokenState, out: &mut Vec<Finding>) {
        let age_s = state.age_s(obs.ts_s);
        let confidence = self.learning.confidence(state.events, age_s);
        let events = state.events;
        let now_h = (age_s / 3600).min(u32::from(u16::MAX)) as u16;
        let e = obs.event;
        let n = &mut state.novelty;
        let mut report = |kind: &'static str, what: &'static str, value: String, score: f64| {
            let Some(confidence) = confidence else {
                return;
            };
            let evidence = Evidence {
                events: vec![obs.event_ref()],
                ..Default::default()
            }
            .fact(what, value.clone())
            .fact("token_events", events);
            let age = if age_s >= 2 * 86_400 {
                format!("{} days", age_s / 86_400)
            } else {
                format!("{} h", age_s / 3600)
            };
            let summary = format!(
                "first {} {value} for this token after {age} and {events} calls",
                what.replace('_', " ")
            );
            out.push(
                Finding::new(DetectorKind::Novelty, kind, score, summary, evidence)
                    .with_confidence(confidence),
            );
        };
        if self.config.asn
            && let Some(asn) = e.asn
            && n.asns.touch(asn, now_h, self.forget_h)
        {
            let label = match &e.as_org {
                Some(org) => format!("AS{asn} ({org})"),
                None => format!("AS{asn}"),
            };
            report("new_asn", "asn", label, 0.5);
        }
        if self.config.user_agent
            && let Some(ua) = e.user_agent.as_deref()
        {
            let family = user_agent_family(ua);
            if n.user_agents.touch(digest(&family), now_h, self.forget_h) {
                report(
                    "new_user_agent",
                    "user_agent_family",
                    family.into_owned(),
                    0.35,
                );
            }
        }
        if self.config.action_class {
            let class = action_class(&e.action);
            if n.action_classes.touch(digest(&class), now_h, self.forget_h) {
                report("new_action_class", "action_class", class.into_owned(), 0.4);
            }
        }
    }
}

impl<const N: usize> crate::state::codec::Codec for ItemSet<N> {
    fn put(&self, w: &mut crate::state::codec::Writer) {
        for (item, seen) in self.items.iter().zip(self.seen_h) {
            w.u32(*item);
            w.u16(seen);
        }
    }
    fn get(
        r: &mut crate::state::codec::Reader<'_>,
    ) -> Result<Self, crate::state::codec::CodecError> {
        let mut set = ItemSet::default();
        for i in 0..N {
            set.items[i] = r.u32()?;
            set.seen_h[i] = r.u16()?;
        }
        Ok(set)
    }
}

impl crate::state::codec::Codec for NoveltyState {
    fn put(&self, w: &mut crate::state::codec::Writer) {
        self.asns.put(w);
        self.user_agents.put(w);
        self.action_classes.put(w);
    }
    fn get(
        r: &mut crate::state::codec::Reader<'_>,
    ) -> Result<Self, crate::state::codec::CodecError> {
        use crate::state::codec::Codec;
        Ok(NoveltyState {
            asns: Codec::get(r)?,
            user_agents: Codec::get(r)?,
            action_classes: Codec::get(r)?,
        })
    }
}

#[cfg(test)]
mod tests;
