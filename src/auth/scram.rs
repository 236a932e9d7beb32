//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: the stored verifier format,
//! the key derivation, the message attribute grammar shared by both sides, and the error type.
//!
//! The two state machines live in submodules: [`ScramServer`] (we authenticate a client) and
//! [`ScramClient`] (we authenticate to PostgreSQL). Both only consume and produce the SASL
//! payload bytes; wrapping them in protocol messages is the caller's job.

mod client;
#[cfg(test)]
mod hostile_tests;
mod server;
#[cfg(test)]
mod tests;

pub use client::{ScramClient, ScramCredentials};
pub use server::ScramServer;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// SASL mechanism name sent in AuthenticationSASL / SASLInitialResponse. We never offer
/// `SCRAM-SHA-256-PLUS`: the proxy terminates TLS itself, so a channel binding the client
/// computed could never match the server connection's anyway.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Iteration count PostgreSQL uses by default (`scram_iterations`); also used for mock
/// verifiers so that an unknown user looks like a typical real one.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Upper bound on the iteration count we accept from a server. Hi() costs one HMAC per
/// iteration, so an unbounded value would let a hostile server pin a CPU core for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Salt length PostgreSQL uses for new verifiers (`SCRAM_DEFAULT_SALT_LEN`).
const SALT_LEN: usize = 16;

/// Raw nonce length before base64; PostgreSQL uses 18 bytes (`SCRAM_RAW_NONCE_LEN`).
const RAW_NONCE_LEN: usize = 18;

const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why a SCRAM step failed. Messages are safe to log; none contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer's message does not follow the SCRAM grammar (or uses a feature we refuse).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client's proof (checked by [`ScramServer`]) or the server's signature (checked by
    /// [`ScramClient`]) did not verify: wrong password or keys, or an impostor server.
    #[error("SCRAM authentication failed: invalid proof")]
    InvalidProof,
    /// The client asked for channel binding ('p' gs2 flag); we only offer plain SCRAM-SHA-256.
    #[error("SCRAM channel binding is not supported")]
    UnsupportedChannelBinding,
    /// The nonce in the peer's message is not the one this exchange established.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The server ended the exchange with an `e=` attribute; the value is its error text.
    #[error("SCRAM error from server: {0}")]
    ServerError(String),
    /// A stored verifier string could not be parsed.
    #[error("invalid SCRAM verifier: {0}")]
    BadVerifier(&'static str),
    /// A step was called in the wrong order, again after completion, or after a failure.
    #[error("SCRAM step called out of order")]
    OutOfOrder,
}

/// Parsed PostgreSQL SCRAM-SHA-256 verifier, the format stored in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
///
/// It holds no password and no ClientKey, so it can authenticate a client but cannot by itself
/// log in anywhere. `Debug` is written by hand and omits the keys, because logging them would
/// give an attacker material for an offline dictionary attack.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Strictly parse the `pg_authid` format. Anything unexpected is an error rather than being
    /// skipped, since a half-understood verifier would turn into a confusing login failure.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest = s
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or(ScramError::BadVerifier("missing SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::BadVerifier("missing '$' before the keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::BadVerifier(
            "missing ':' after the iteration count",
        ))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(ScramError::BadVerifier("missing ':' between the keys"))?;
        let iterations = parse_decimal_u32(iterations.as_bytes())
            .ok_or(ScramError::BadVerifier("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(ScramError::BadVerifier("iteration count is zero"));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::BadVerifier("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(ScramError::BadVerifier("salt is empty"));
        }
        let stored_key = decode_key(stored_key.as_bytes()).ok_or(ScramError::BadVerifier(
            "StoredKey is not 32 bytes of base64",
        ))?;
        let server_key = decode_key(server_key.as_bytes()).ok_or(ScramError::BadVerifier(
            "ServerKey is not 32 bytes of base64",
        ))?;
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Cheap format sniff used to tell a SCRAM verifier from an md5 hash or a plaintext
    /// password in configuration; it does not validate the rest (use [`Self::parse`]).
    pub fn is_verifier(s: &str) -> bool {
        s.starts_with(VERIFIER_PREFIX)
    }

    /// Derive a verifier from a plaintext password, as `CREATE ROLE ... PASSWORD` would.
    ///
    /// The password goes through SASLprep, falling back to the raw bytes when that fails, as
    /// in PostgreSQL (see `normalize_password`). A random 16-byte salt is drawn when
    /// `salt` is `None` or empty (an empty salt could not be stored in the `pg_authid` format), and
    /// an `iterations` of 0, which is never valid, falls back to [`DEFAULT_ITERATIONS`], so the
    /// result always round-trips through [`Self::parse`].
    pub fn from_password(password: &str, salt: Option<&[u8]>, iterations: u32) -> Self {
        let salt = match salt {
            Some(s) if !s.is_empty() => s.to_vec(),
            _ => crate::entropy::bytes::<SALT_LEN>().to_vec(),
        };
        let iterations = if iterations == 0 {
            DEFAULT_ITERATIONS
        } else {
            iterations
        };
        let keys = ScramKeys::from_password(password, &salt, iterations);
        Self {
            iterations,
            salt,
            stored_key: sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// Deterministic fake verifier for an unknown user ("mock authentication", as PostgreSQL
    /// does): the exchange runs to the end and fails with the same error as a wrong password, so a
    /// client cannot probe which users exist. The salt must be stable per user name (otherwise two
    /// attempts would reveal the user is fake) yet unpredictable without `secret`, hence
    /// HMAC(secret, username). The keys are random each time: no proof can match them.
    pub fn mock(username: &str, secret: &[u8; 32]) -> Self {
        let mac = hmac_sha256(secret, &[username.as_bytes()]);
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt: mac[..SALT_LEN].to_vec(),
            stored_key: crate::entropy::bytes(),
            server_key: crate::entropy::bytes(),
        }
    }
}

/// Produces the `pg_authid` format, the exact inverse of [`ScramVerifier::parse`].
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// The client's SCRAM keys as recovered by the server side of a successful exchange; enough to
/// log in to PostgreSQL on the client's behalf when PostgreSQL stores the same verifier
/// (PgBouncer-style passthrough), without ever knowing the password.
#[derive(Clone)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramKeys {
    /// ClientKey and ServerKey from a password (RFC 5802 section 3), shared by
    /// [`ScramVerifier::from_password`] and the client side so both normalize identically.
    pub(crate) fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(&normalize_password(password), salt, iterations);
        Self {
            client_key: hmac_sha256(&salted, &[b"Client Key"]),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        }
    }
}

/// Keys the proxy derived for its own logins to PostgreSQL, by (salt, iterations, SHA-256
/// of the password). The salt and iteration count of a role change only with its password,
/// so every reconnect after the first skips Hi(): 4096 HMACs, a millisecond or two during
/// which a single-threaded proxy serves nobody (and a restart of PostgreSQL reconnects the
/// whole pool at once). Bounded: a handful of server logins is the norm.
struct DerivedKeys {
    entries: parking_lot::Mutex<Vec<DerivedKey>>,
}

struct DerivedKey {
    salt: Vec<u8>,
    iterations: u32,
    password_digest: [u8; 32],
    keys: ScramKeys,
}

const DERIVED_KEYS_KEPT: usize = 32;

impl ScramKeys {
    /// [`ScramKeys::from_password`], remembered for the next login with the same salt.
    pub(crate) fn from_password_cached(password: &str, salt: &[u8], iterations: u32) -> Self {
        static CACHE: DerivedKeys = DerivedKeys {
            entries: parking_lot::Mutex::new(Vec::new()),
        };
        let digest = sha256(password.as_bytes());
        let found = CACHE
            .entries
            .lock()
            .iter()
            .find(|e| {
                e.iterations == iterations
                    && e.salt == salt
                    && bool::from(e.password_digest.ct_eq(&digest))
            })
            .map(|e| e.keys.clone());
        if let Some(keys) = found {
            return keys;
        }
        // Derived outside the lock: another pool's login need not wait for this one.
        let keys = Self::from_password(password, salt, iterations);
        let mut entries = CACHE.entries.lock();
        if entries.len() >= DERIVED_KEYS_KEPT {
            entries.remove(0);
        }
        entries.push(DerivedKey {
            salt: salt.to_vec(),
            iterations,
            password_digest: digest,
            keys: keys.clone(),
        });
        keys
    }
}

/// Never prints key bytes: a ClientKey is as good as the password for logging in.
impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys { .. }")
    }
}

/// The bytes fed to Hi() for a password, as PostgreSQL's pg_saslprep makes them: the
/// SASLprep form (RFC 4013: NFKC, non-ASCII spaces mapped to space, "mapped to nothing"
/// characters such as the soft hyphen removed), or the raw bytes when SASLprep rejects the
/// string (prohibited characters, bad bidi), so that every password PostgreSQL accepts works
/// through the proxy too.
fn normalize_password(password: &str) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    if password.is_ascii() {
        // ASCII passes SASLprep unchanged (control characters make it fail, and then the raw
        // bytes are used anyway).
        return Cow::Borrowed(password.as_bytes());
    }
    match stringprep::saslprep(password) {
        Ok(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
        Ok(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
        Err(_) => Cow::Borrowed(password.as_bytes()),
    }
}

// ---------------------------------------------------------------------------------------------
// Primitives shared by the server and client state machines.

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA-256 over the concatenation of `parts` (saves building AuthMessage twice).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = new_hmac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn new_hmac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of every length (long ones are hashed first), so the
    // `InvalidLength` branch of this generic constructor cannot be taken.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Hi() from RFC 5802: PBKDF2-HMAC-SHA-256 with a single output block. The keyed HMAC state is
/// cloned per iteration so the password is hashed into the key pads only once.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = new_hmac(password);
    let mut block: [u8; 32] = keyed
        .clone()
        .chain_update(salt)
        .chain_update(1u32.to_be_bytes())
        .finalize()
        .into_bytes()
        .into();
    let mut result = block;
    for _ in 1..iterations {
        block = keyed
            .clone()
            .chain_update(block)
            .finalize()
            .into_bytes()
            .into();
        for (r, b) in result.iter_mut().zip(block.iter()) {
            *r ^= b;
        }
    }
    result
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// A fresh nonce: 18 random bytes in base64, which uses only printable characters and no ','.
fn random_nonce() -> String {
    BASE64.encode(crate::entropy::bytes::<RAW_NONCE_LEN>())
}

fn decode_key(b64: &[u8]) -> Option<[u8; 32]> {
    BASE64.decode(b64).ok()?.try_into().ok()
}

/// Digits only (no sign, no spaces), no overflow.
fn parse_decimal_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&c| (0x21..=0x7e).contains(&c) && c != b',')
}

/// Splits a SCRAM message into `x=value` attributes. Values never contain ',' (nonces exclude
/// it, base64 has none, user names escape it as `=2C`), so splitting on ',' is exact. The
/// parser tracks the byte offset of each attribute because AuthMessage needs raw slices.
struct Attributes<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Attributes<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Offset of the next unread attribute within the input.
    fn position(&self) -> usize {
        self.pos
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// The next attribute as (name, value). A name is one ASCII letter followed by '=';
    /// empty items (",,") and a trailing ',' are errors.
    fn next_any(&mut self) -> Result<(u8, &'a [u8]), ScramError> {
        if self.is_empty() {
            return Err(ScramError::Malformed("message ends early"));
        }
        let rest = &self.input[self.pos..];
        let (item, consumed) = match rest.iter().position(|&c| c == b',') {
            Some(i) if i + 1 == rest.len() => {
                return Err(ScramError::Malformed("trailing ','"));
            }
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        match item {
            [name, b'=', value @ ..] if name.is_ascii_alphabetic() => {
                self.pos += consumed;
                Ok((*name, value))
            }
            _ => Err(ScramError::Malformed(
                "expected an attribute of the form x=value",
            )),
        }
    }

    /// The next attribute, which must be `name`; `err` describes what was expected.
    fn expect(&mut self, name: u8, err: &'static str) -> Result<&'a [u8], ScramError> {
        match self.next_any() {
            Ok((n, value)) if n == name => Ok(value),
            _ => Err(ScramError::Malformed(err)),
        }
    }
}
