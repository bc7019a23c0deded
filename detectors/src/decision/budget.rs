//! The revocation budget: at most N revocations per minute of event time,
//! per issuer and overall.

use std::collections::{HashMap, VecDeque};

const MINUTE_MS: i64 = 60_000;

#[derive(Default)]
struct Window {
    stamps: VecDeque<i64>,
    /// When this scope last raised its over-budget alert.
    alerted_ms: Option<i64>,
}

impl Window {
    fn used(&mut self, now_ms: i64) -> usize {
        while self
            .stamps
            .front()
            .is_some_and(|&t| t <= now_ms - MINUTE_MS)
        {
            self.stamps.pop_front();
        }
        self.stamps.len()
    }
}

/// Which limit a revocation ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverBudget {
    Issuer { limit: u32 },
    Overall { limit: u32 },
}

pub struct Budget {
    per_issuer: u32,
    overall: u32,
    issuers: HashMap<String, Window>,
    all: Window,
}

impl Budget {
    pub fn new(per_issuer: u32, overall: u32) -> Self {
        Budget {
            per_issuer,
            overall,
            issuers: HashMap::new(),
            all: Window::default(),
        }
    }

    /// Takes one revocation from the budget at `now_ms`, or says which limit
    /// is exhausted (and takes nothing).
    pub fn take(&mut self, issuer: &str, now_ms: i64) -> Result<(), OverBudget> {
        if self.all.used(now_ms) >= self.overall as usize {
            return Err(OverBudget::Overall {
                limit: self.overall,
            });
        }
        let w = self.issuers.entry(issuer.to_string()).or_default();
        if w.used(now_ms) >= self.per_issuer as usize {
            return Err(OverBudget::Issuer {
                limit: self.per_issuer,
            });
        }
        w.stamps.push_back(now_ms);
        self.all.stamps.push_back(now_ms);
        Ok(())
    }

    /// Whether an over-budget alert for this scope should be raised now
    /// (at most once a minute per scope, so the alert is loud, not a flood).
    pub fn should_alert(&mut self, issuer: &str, which: &OverBudget, now_ms: i64) -> bool {
        let w = match which {
            OverBudget::Overall { .. } => &mut self.all,
            OverBudget::Issuer { .. } => self.issuers.entry(issuer.to_string()).or_default(),
        };
        match w.alerted_ms {
            Some(t) if now_ms - t < MINUTE_MS => false,
            _ => {
                w.alerted_ms = Some(now_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_issuer_and_overall_in_a_sliding_minute() {
        let mut b = Budget::new(2, 3);
        assert!(b.take("gh", 0).is_ok());
        assert!(b.take("gh", 1_000).is_ok());
        assert_eq!(b.take("gh", 2_000), Err(OverBudget::Issuer { limit: 2 }));
        assert!(b.take("okta", 3_000).is_ok());
        assert_eq!(
            b.take("vault", 4_000),
            Err(OverBudget::Overall { limit: 3 })
        );
        // The first revocation leaves the minute at t = 60 s.
        assert!(b.take("vault", 60_001).is_ok());
        assert_eq!(b.take("gh", 60_002), Err(OverBudget::Overall { limit: 3 }));
        assert!(b.take("gh", 61_001).is_ok());
    }

    #[test]
    fn alerts_once_a_minute_per_scope() {
        let mut b = Budget::new(1, 10);
        let over = OverBudget::Issuer { limit: 1 };
        assert!(b.should_alert("gh", &over, 0));
        assert!(!b.should_alert("gh", &over, 30_000));
        assert!(b.should_alert("okta", &over, 30_000));
        assert!(b.should_alert("gh", &over, 60_000));
    }
}
