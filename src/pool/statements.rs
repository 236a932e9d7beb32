//! Which proxy-named prepared statements a server connection holds, with least-recently-
//! used eviction so that a long-lived connection does not accumulate them without bound.

use std::collections::HashMap;

/// The server-side name of statement `id`: the proxy's own namespace, which no client name
/// can collide with because clients never see or send these names. Built on the stack:
/// every Bind of a named statement needs one.
pub fn server_name(id: u64) -> ServerName {
    use std::io::Write;
    let mut name = ServerName {
        buf: [0; SERVER_NAME_MAX],
        len: 0,
    };
    let prefix = server_name_prefix().as_bytes();
    name.buf[..prefix.len()].copy_from_slice(prefix);
    let mut rest = &mut name.buf[prefix.len()..];
    let room = rest.len();
    let _ = write!(rest, "{id}");
    name.len = (prefix.len() + room - rest.len()) as u8;
    name
}

/// `lp_<tag>_`: what every server-side statement name starts with.
pub fn server_name_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("lp_{:016x}_", instance_tag()))
}

/// "lp_" + 16 hex digits + "_" + up to 20 digits.
const SERVER_NAME_MAX: usize = 40;

/// A server-side statement name (see [`server_name`]).
pub struct ServerName {
    buf: [u8; SERVER_NAME_MAX],
    len: u8,
}

impl std::ops::Deref for ServerName {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

/// The statement id in a server-side name, if `name` is one of this process's.
pub fn parse_server_name(name: &[u8]) -> Option<u64> {
    let digits = name.strip_prefix(server_name_prefix().as_bytes())?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A random tag per proxy process: statement names cannot be guessed by a client that wants
/// to DEALLOCATE and replace another client's statement through dynamic SQL.
fn instance_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| u64::from_ne_bytes(crate::entropy::bytes()))
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

    #[test]
    fn server_names_round_trip_without_allocating() {
        let name = server_name(u64::MAX);
        assert!(name.starts_with(server_name_prefix()));
        assert_eq!(parse_server_name(name.as_bytes()), Some(u64::MAX));
        assert_eq!(&*server_name(7), format!("{}7", server_name_prefix()));
        assert_eq!(parse_server_name(b"lp_0_7"), None);
    }
}
