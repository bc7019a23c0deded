//! A sliding window of per-bucket sums, and an EWMA baseline fed at each
//! bucket boundary. Compact on purpose: it lives in every token's state.
//!
//! The window covers the `BUCKETS` buckets ending at the newest bucket seen
//! (`head`): with 10 s buckets, the last 60 s, moving in 10 s steps. An
//! event older than the window is not counted and is reported as too late.

/// Buckets per window.
pub const BUCKETS: usize = 6;

/// One bucket's sums. Bytes are kept in KiB so a u32 holds 4 TiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub requests: u32,
    pub kib: u32,
    pub records: u32,
}

impl Bucket {
    fn add(&mut self, other: Bucket) {
        self.requests = self.requests.saturating_add(other.requests);
        self.kib = self.kib.saturating_add(other.kib);
        self.records = self.records.saturating_add(other.records);
    }
}

/// Sums over the whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub kib: u64,
    pub records: u64,
}

/// The ring of buckets. `head` is the bucket number (time / width) of the
/// newest bucket; `ring[n % BUCKETS]` holds bucket `n`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    head: u32,
    ring: [Bucket; BUCKETS],
}

/// What adding to the window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Added; the head moved forward by this many buckets (0 if not).
    Advanced(u32),
    /// Older than the window; not counted.
    TooLate,
}

impl Window {
    /// Adds `sample` to bucket number `bucket`. Buckets that fall out of the
    /// window as the head moves forward are cleared.
    pub fn add(&mut self, bucket: u32, sample: Bucket) -> Added {
        let empty = self.ring.iter().all(|b| *b == Bucket::default()) && self.head == 0;
        if empty {
            self.head = bucket;
        }
        if bucket > self.head {
            let steps = bucket - self.head;
            for n in 1..=steps.min(BUCKETS as u32) {
                self.ring[((self.head + n) as usize) % BUCKETS] = Bucket::default();
            }
            self.head = bucket;
            self.ring[(bucket as usize) % BUCKETS].add(sample);
            return Added::Advanced(steps);
        }
        if self.head - bucket >= BUCKETS as u32 {
            return Added::TooLate;
        }
        self.ring[(bucket as usize) % BUCKETS].add(sample);
        Added::Advanced(0)
    }

    pub fn head(&self) -> u32 {
        self.head
    }

    pub fn totals(&self) -> Totals {
        self.ring.iter().fold(Totals::default(), |t, b| Totals {
            requests: t.requests + u64::from(b.requests),
            kib: t.kib + u64::from(b.kib),
            records: t.records + u64::from(b.records),
        })
    }
}

/// Exponentially weighted moving averages of the window totals, sampled
/// once per bucket boundary. `samples` counts updates, for warm-up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    pub requests: f32,
    pub kib: f32,
    pub records: f32,
    pub samples: u16,
}

impl Baseline {
    /// Folds in `totals` as the value at the last closed boundary, then
    /// `idle` more boundaries at which the window was empty. `alpha` is the
    /// weight of one sample once warmed up; before that the weight is
    /// 1/(n+1), a plain mean, so early samples do not linger for hours.
    pub fn update(&mut self, totals: Totals, idle: u32, alpha: f32) {
        self.blend(totals, alpha);
        // Empty samples: one by one while still warming up (at most about
        // 1/alpha of them), then in closed form: avg * (1 - alpha)^k.
        let mut remaining = idle;
        while remaining > 0 && 1.0 / (f32::from(self.samples) + 1.0) > alpha {
            self.blend(Totals::default(), alpha);
            remaining -= 1;
        }
        if remaining > 0 {
            let decay = (1.0 - alpha).powi(remaining.min(1 << 20) as i32);
            self.requests *= decay;
            self.kib *= decay;
            self.records *= decay;
            self.samples = self
                .samples
                .saturating_add(remaining.min(u32::from(u16::MAX)) as u16);
        }
    }

    fn blend(&mut self, totals: Totals, alpha: f32) {
        let weight = alpha.max(1.0 / (f32::from(self.samples) + 1.0));
        self.requests += weight * (totals.requests as f32 - self.requests);
        self.kib += weight * (totals.kib as f32 - self.kib);
        self.records += weight * (totals.records as f32 - self.records);
        self.samples = self.samples.saturating_add(1);
    }
}

use super::codec::{Codec, CodecError, Reader, Writer};

impl Codec for Bucket {
    fn put(&self, w: &mut Writer) {
        w.u32(self.requests);
        w.u32(self.kib);
        w.u32(self.records);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Bucket {
            requests: r.u32()?,
            kib: r.u32()?,
            records: r.u32()?,
        })
    }
}

impl Codec for Window {
    fn put(&self, w: &mut Writer) {
        w.u32(self.head);
        self.ring.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Window {
            head: r.u32()?,
            ring: Codec::get(r)?,
        })
    }
}

impl Codec for Baseline {
    fn put(&self, w: &mut Writer) {
        w.f32(self.requests);
        w.f32(self.kib);
        w.f32(self.records);
        w.u16(self.samples);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Baseline {
            requests: r.f32()?,
            kib: r.f32()?,
            records: r.f32()?,
            samples: r.u16()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn one(requests: u32) -> Bucket {
        Bucket {
            requests,
            kib: requests * 2,
            records: requests * 3,
        }
    }

    #[test]
    fn slides_and_clears_old_buckets() {
        let mut w = Window::default();
        assert_eq!(w.add(100, one(1)), Added::Advanced(0));
        assert_eq!(w.add(103, one(1)), Added::Advanced(3));
        assert_eq!(w.totals().requests, 2);
        assert_eq!(w.add(105, one(1)), Added::Advanced(2));
        assert_eq!(
            w.totals().requests,
            3,
            "buckets 100..=105 are all in the window"
        );
        assert_eq!(w.add(106, one(1)), Added::Advanced(1));
        assert_eq!(w.totals().requests, 3, "bucket 100 left the window");
        assert_eq!(w.add(100, one(1)), Added::TooLate);
        assert_eq!(
            w.add(101, one(5)),
            Added::Advanced(0),
            "late but inside the window"
        );
        assert_eq!(
            w.totals(),
            Totals {
                requests: 8,
                kib: 16,
                records: 24
            }
        );
        assert_eq!(w.add(1_000, one(1)), Added::Advanced(894));
        assert_eq!(w.totals().requests, 1, "a long gap clears everything");
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut w = Window::default();
        w.add(
            7,
            Bucket {
                requests: u32::MAX,
                kib: u32::MAX,
                records: 1,
            },
        );
        w.add(
            7,
            Bucket {
                requests: 5,
                kib: 5,
                records: 1,
            },
        );
        assert_eq!(w.totals().requests, u64::from(u32::MAX));
    }

    #[test]
    fn baseline_decays_over_idle_boundaries() {
        let mut b = Baseline::default();
        b.update(
            Totals {
                requests: 100,
                kib: 0,
                records: 0,
            },
            0,
            0.5,
        );
        assert_eq!((b.requests, b.samples), (100.0, 1));
        b.update(
            Totals {
                requests: 0,
                kib: 0,
                records: 0,
            },
            0,
            0.5,
        );
        assert_eq!(b.requests, 50.0);
        b.update(
            Totals {
                requests: 50,
                kib: 0,
                records: 0,
            },
            2,
            0.5,
        );
        assert_eq!(b.requests, 12.5, "50 blended, then two empty samples");
        assert_eq!(b.samples, 5);
    }

    #[test]
    fn baseline_is_a_plain_mean_while_warming_up() {
        let mut b = Baseline::default();
        for x in [10, 20, 30] {
            b.update(
                Totals {
                    requests: x,
                    kib: 0,
                    records: 0,
                },
                0,
                0.01,
            );
        }
        assert!((b.requests - 20.0).abs() < 1e-4, "{}", b.requests);
    }

    proptest! {
        /// The window total always equals a brute-force recount of the
        /// accepted events whose bucket lies in [head - BUCKETS + 1, head].
        #[test]
        fn totals_equal_a_brute_force_recount(
            events in proptest::collection::vec((0u32..200, 1u32..50), 1..300)
        ) {
            let mut w = Window::default();
            let mut accepted: Vec<(u32, u32)> = Vec::new();
            for &(bucket, n) in &events {
                match w.add(bucket, one(n)) {
                    Added::TooLate => prop_assert!(w.head() - bucket >= BUCKETS as u32),
                    Added::Advanced(_) => accepted.push((bucket, n)),
                }
                let head = w.head();
                prop_assert_eq!(head, accepted.iter().map(|a| a.0).max().unwrap());
                let low = head.saturating_sub(BUCKETS as u32 - 1);
                let expected: u64 = accepted.iter().filter(|a| a.0 >= low).map(|a| u64::from(a.1)).sum();
                prop_assert_eq!(w.totals().requests, expected);
                prop_assert_eq!(w.totals().kib, expected * 2);
            }
        }

        /// The closed-form idle decay equals feeding the empty samples one by one.
        #[test]
        fn idle_decay_matches_stepwise(start in 0u32..10_000, idle in 0u32..50, alpha in 0.001f32..0.5) {
            let mut fast = Baseline::default();
            let mut slow = Baseline::default();
            let t = Totals { requests: u64::from(start), kib: 0, records: 0 };
            fast.update(t, 0, alpha);
            slow.update(t, 0, alpha);
            fast.update(t, idle, alpha);
            slow.update(t, 0, alpha);
            for _ in 0..idle {
                slow.update(Totals::default(), 0, alpha);
            }
            prop_assert!((fast.requests - slow.requests).abs() <= 1e-3 * slow.requests.max(1.0));
            prop_assert_eq!(fast.samples, slow.samples);
        }
    }
}
