//! Which proxy-named prepared statements a server connection holds, with least-recently-
//! used eviction so that a long-lived connection does not accumulate them without bound.

use std::collections::HashMap;

/// The server-side name of statement `id`: the proxy's own namespace, which no client name
/// can collide with because clients never see or send these names.
pub fn server_name(id: u64) -> String {
    format!("lp_{:016x}_{id}", instance_tag())
}

/// A random tag per proxy process: statement names cannot be guessed by a client that wants
/// to DEALLOCATE and replace another client's statement through dynamic SQL.
fn instance_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random source is unavailable");
        u64::from_ne_bytes(b)
    })
}

#[derive(Debug)]
pub struct ServerStatements {
    /// Statement id → last use tick.
    held: HashMap<u64, u64>,
    tick: u64,
    capacity: usize,
}

impl ServerStatements {
    pub fn new(capacity: usize) -> Self {
        ServerStatements {
            held: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// Whether the server holds `id`; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.held.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `id` as prepared; returns the id to close first if the cache was full.
    pub fn insert(&mut self, id: u64) -> Option<u64> {
        self.tick += 1;
        let evict = if self.held.len() >= self.capacity && !self.held.contains_key(&id) {
            let oldest = self.held.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.held.remove(&k);
            }
            oldest
        } else {
            None
        };
        self.held.insert(id, self.tick);
        evict
    }

    pub fn remove(&mut self, id: u64) {
        self.held.remove(&id);
    }

    pub fn clear(&mut self) {
        self.held.clear();
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut s = ServerStatements::new(2);
        assert_eq!(s.insert(1), None);
        assert_eq!(s.insert(2), None);
        assert!(s.touch(1));
        assert_eq!(s.insert(3), Some(2));
        assert!(s.touch(1) && s.touch(3) && !s.touch(2));
        assert_eq!(s.len(), 2);
    }
}
