//! A bounded cache keyed by IP address: two generations, so lookups are
//! O(1), memory is bounded by `capacity`, and recently used entries survive
//! a rotation (an approximation of LRU without per-entry bookkeeping).

use std::collections::HashMap;
use std::net::IpAddr;

/// Seeded per process: addresses come from input, so the seed is not
/// guessable, and it hashes far faster than the standard SipHash.
type Hasher = foldhash::fast::RandomState;

#[derive(Clone)]
pub struct IpCache<V> {
    capacity_per_generation: usize,
    current: HashMap<IpAddr, V, Hasher>,
    previous: HashMap<IpAddr, V, Hasher>,
}

impl<V: Clone> IpCache<V> {
    /// Holds at most `capacity` entries (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        IpCache {
            capacity_per_generation: capacity / 2,
            current: HashMap::default(),
            previous: HashMap::default(),
        }
    }

    pub fn get(&mut self, ip: &IpAddr) -> Option<&V> {
        if !self.current.contains_key(ip) {
            let value = self.previous.remove(ip)?;
            self.insert(*ip, value);
        }
        self.current.get(ip)
    }

    pub fn insert(&mut self, ip: IpAddr, value: V) {
        if self.capacity_per_generation == 0 {
            return;
        }
        if self.current.len() >= self.capacity_per_generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(ip, value);
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn stays_within_capacity_and_keeps_recent_entries() {
        let mut c = IpCache::new(100);
        for n in 0..10_000 {
            c.insert(ip(n), n);
            assert!(c.len() <= 100);
            // A hot entry touched regularly survives every rotation.
            assert_eq!(c.get(&ip(0)), Some(&0));
        }
        assert_eq!(c.get(&ip(9_999)), Some(&9_999));
        assert_eq!(c.get(&ip(5)), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = IpCache::new(0);
        c.insert(ip(1), 1);
        assert!(c.is_empty());
    }
}
