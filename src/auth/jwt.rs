//! JSON Web Tokens as passwords: a client may send a signed JWT where PostgreSQL expects a
//! password, and the proxy takes the tenant and the read/write role from its claims.
//!
//! Only the compact JWS form with three algorithms is accepted: HS256 (shared secret), RS256
//! (RSA PKCS#1 v1.5 with SHA-256) and EdDSA (Ed25519). Keys come only from the proxy's own
//! configuration, loaded and parsed once by [`JwtVerifier::new`]; header parameters that point
//! at other keys (`jwk`, `jku`, `x5u`, `x5c`) are ignored, so a token can never choose the key
//! that verifies it. Each loaded key is bound to one algorithm by its kind, so an HS256 token
//! cannot be checked against an RSA public key used as an HMAC secret (algorithm confusion).
//!
//! Tokens are hostile input: the size is bounded before decoding, JSON nesting is bounded
//! before parsing, duplicate claims are refused, the signature is checked before the payload
//! is parsed, and no input panics. Like the rest of `auth`, this module does no network I/O;
//! files are read only while loading keys.
//!
//! Submodules: `keys` (key entries, secrets, PEM), `der` (SPKI parsing), `jwks` (JWKS files),
//! `claims` (JSON limits and claim checks).

mod claims;
mod der;
mod jwks;
mod keys;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest token accepted (bytes of the compact form). Real tokens are well under 2 KiB; the
/// bound keeps a hostile client from making us decode and parse megabytes per login.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Longest encoded header. A header holds `alg`, `kid`, `typ` and little else.
const MAX_HEADER_LEN: usize = 2048;

/// Longest encoded signature: an RSA-8192 signature (1024 bytes) in base64url.
const MAX_SIGNATURE_LEN: usize = 1366;

/// Deepest JSON nesting accepted in a header or payload. Flat claims are the norm; a little
/// nesting is allowed for IdPs that group custom claims in an object.
const MAX_JSON_DEPTH: usize = 16;

/// Largest configurable clock leeway. A larger one would quietly turn `exp` into a suggestion.
const MAX_LEEWAY_SECS: u64 = 3600;

/// The `jwt:` block of the proxy config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss` value, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Value that must appear in `aud` (a string or an array of strings), if set. Without it
    /// any audience is accepted, so a token minted for another service of the same issuer
    /// would log in: set it whenever the issuer serves more than this proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claim holding the tenant id (a string; the handshake validates it as a ULID).
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Claim holding the role, `"read"` or `"write"`; the claim itself is optional.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds (at most 3600).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Whether tokens without `exp` are refused. On by default: a token that never expires
    /// cannot be revoked short of rotating the key.
    #[serde(default = "default_require_exp")]
    pub require_exp: bool,
    /// Keys that may have signed a token; at least one.
    pub keys: Vec<JwtKeySettings>,
    /// The users-file entries whose PostgreSQL logins (and pools) serve token holders, by
    /// role: tokens carry tenants, never credentials.
    pub server_users: JwtServerUsers,
    /// Role for tokens without a role claim; without it such tokens are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
}

/// `server_users: { read: app_ro, write: app }`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtServerUsers {
    pub read: String,
    pub write: String,
}

fn default_tenant_claim() -> String {
    "tenant_id".to_owned()
}

fn default_role_claim() -> String {
    "role".to_owned()
}

fn default_leeway_secs() -> u64 {
    30
}

fn default_require_exp() -> bool {
    true
}

/// Serializes a present secret as `<redacted>`, so the effective settings say that one is
/// set without printing it.
fn redacted<S: serde::Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

/// One configured key (or, with `jwks_file`, a set of keys). HS256 takes exactly one of
/// `secret`, `secret_file` and `secret_env`; RS256 and EdDSA take exactly one of
/// `public_key_file` and `jwks_file`. Relative paths are resolved against the config directory.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySettings {
    /// Key id matched against the token header's `kid`. Not allowed with `jwks_file`, whose
    /// keys carry their own ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: JwtAlgorithm,
    /// HS256 secret inline (its UTF-8 bytes are the HMAC key; at least 32 bytes). Shown as
    /// `<redacted>` by `--check-config`: whoever holds it mints tokens for any tenant.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub secret: Option<String>,
    /// HS256 secret in a file; one trailing newline is not part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// HS256 secret in this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// RS256/EdDSA public key: a PEM `PUBLIC KEY` (SPKI) block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// RS256/EdDSA keys from a JWKS file; the JWKs of this entry's `alg` are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
}

/// Written by hand so that an inline secret never reaches a log line.
impl fmt::Debug for JwtKeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeySettings")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .finish()
    }
}

/// The signature algorithms we accept. Variant names are the JOSE `alg` names so that code,
/// config and tokens all read the same.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

impl JwtAlgorithm {
    /// The JOSE `alg` header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// Exact, case-sensitive match: `"none"`, `"hs256"` and everything else are not ours.
    fn from_jose(alg: &str) -> Option<JwtAlgorithm> {
        match alg {
            "HS256" => Some(JwtAlgorithm::HS256),
            "RS256" => Some(JwtAlgorithm::RS256),
            "EdDSA" => Some(JwtAlgorithm::EdDSA),
            _ => None,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a verified token says the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The `sub` claim, if present.
    pub subject: Option<String>,
    /// The tenant claim, non-empty; not yet validated as a ULID (the caller's job).
    pub tenant: String,
    /// The role claim: `Some("read")`, `Some("write")` or `None` when the token has none.
    pub role: Option<String>,
    /// The `exp` claim (seconds since the epoch), if present.
    pub expires_at: Option<u64>,
}

/// Why a token was refused or keys could not be loaded. Messages are safe to log: they hold
/// no key material and no token contents beyond a shortened, printable `alg` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed compact JWS, or a header/claim of the wrong JSON type.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not HS256, RS256 or EdDSA (this includes `none`).
    #[error("unsupported JWT algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No configured key fits the header's `kid` and `alg`.
    #[error("no configured key matches the JWT's kid and alg")]
    UnknownKey,
    /// The signature does not verify with any candidate key.
    #[error("JWT signature does not verify")]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("JWT has expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("JWT is not valid yet")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("JWT issuer is not the configured one")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("JWT audience does not include the configured one")]
    WrongAudience,
    /// A required claim is absent or has an unusable value (the claim's name).
    #[error("JWT claim {0:?} is missing or invalid")]
    MissingClaim(String),
    /// The settings or a key could not be loaded; the message names the key.
    #[error("JWT configuration: {0}")]
    Config(String),
}

/// Verifies tokens against keys loaded once at startup. Cheap to clone and share.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Vec<keys::VerifyKey>,
    rules: claims::ClaimRules,
}

/// Lists key ids and algorithms only; key material stays out of logs.
impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}:{}", k.alg(), k.kid.as_deref().unwrap_or("-")))
            .collect();
        f.debug_struct("JwtVerifier")
            .field("keys", &keys)
            .field("rules", &self.rules)
            .finish()
    }
}

/// The three parts of a compact JWS, still encoded; `signed` is `header.payload` as sent,
/// which is what the signature covers.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    signed: &'a str,
}

/// Header parameters we read. Others are ignored (RFC 7515 allows that unless they are listed
/// in `crit`, and we refuse any `crit`).
struct Header {
    alg: String,
    kid: Option<String>,
    has_crit: bool,
}

impl JwtVerifier {
    /// Loads every key (files relative to `base_dir`), failing with a clear message naming the
    /// key. HS256 secrets from `secret_env` are read from the process environment now.
    pub fn new(settings: &JwtSettings, base_dir: &Path) -> Result<JwtVerifier, JwtError> {
        Self::with_env(settings, base_dir, &|name| std::env::var(name).ok())
    }

    /// [`JwtVerifier::new`] with the environment lookup passed in, so tests need not mutate
    /// the process environment.
    fn with_env(
        settings: &JwtSettings,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<JwtVerifier, JwtError> {
        if settings.keys.is_empty() {
            return Err(JwtError::Config("jwt.keys lists no key".to_owned()));
        }
        if settings.tenant_claim.is_empty() || settings.role_claim.is_empty() {
            return Err(JwtError::Config(
                "jwt.tenant_claim and jwt.role_claim must not be empty".to_owned(),
            ));
        }
        if settings.tenant_claim == settings.role_claim {
            return Err(JwtError::Config(
                "jwt.tenant_claim and jwt.role_claim must name different claims".to_owned(),
            ));
        }
        if settings.leeway_secs > MAX_LEEWAY_SECS {
            return Err(JwtError::Config(format!(
                "jwt.leeway_secs is {}; at most {MAX_LEEWAY_SECS} is allowed",
                settings.leeway_secs
            )));
        }
        let mut loaded = Vec::new();
        for (index, entry) in settings.keys.iter().enumerate() {
            let mut entry_keys = keys::load_entry(entry, base_dir, env).map_err(|message| {
                let kid = entry
                    .kid
                    .as_deref()
                    .map(|k| format!(" (kid {k:?})"))
                    .unwrap_or_default();
                JwtError::Config(format!("jwt.keys[{index}]{kid}, {}: {message}", entry.alg))
            })?;
            loaded.append(&mut entry_keys);
        }
        Ok(JwtVerifier {
            keys: loaded,
            rules: claims::ClaimRules::from_settings(settings),
        })
    }

    /// Verifies the signature, then `exp`/`nbf` (with leeway), `iss` and `aud`, and extracts
    /// the identity. The header's `alg` must be one we support and the key's own algorithm;
    /// with a `kid` only keys with that id are tried (or, if no configured key has that id,
    /// keys configured without one), without a `kid` every key of the header's algorithm.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<JwtIdentity, JwtError> {
        let parts = split(token)?;
        let header = parse_header(parts.header)?;
        let alg = JwtAlgorithm::from_jose(&header.alg)
            .ok_or_else(|| JwtError::UnsupportedAlgorithm(printable(&header.alg)))?;
        if header.has_crit {
            // We implement no JWS extension, so a token that requires one must be refused.
            return Err(JwtError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        if parts.signature.len() > MAX_SIGNATURE_LEN {
            return Err(JwtError::Malformed("signature too long"));
        }
        let signature = decode_part(parts.signature, "signature is not base64url")?;
        self.check_signature(alg, header.kid.as_deref(), parts.signed, &signature)?;
        // Only now, with the issuer's signature checked, do we parse the payload.
        let payload = decode_part(parts.payload, "payload is not base64url")?;
        let claims = claims::parse_object(&payload, claims::Part::Payload)?;
        claims::validate(&self.rules, &claims, now_unix)
    }

    /// Cheap check whether a password looks like a JWT: three base64url parts and a header
    /// that decodes to a JSON object with a string `alg`. The handshake uses it to choose JWT
    /// or password authentication; a real password essentially never passes it.
    #[must_use]
    pub fn looks_like_jwt(s: &str) -> bool {
        match split(s) {
            Ok(parts) => parse_header(parts.header).is_ok(),
            Err(_) => false,
        }
    }

    /// Tries the candidate keys (see [`JwtVerifier::verify`]); `UnknownKey` when there are
    /// none, so a token for another algorithm or key never reaches a verification routine.
    fn check_signature(
        &self,
        alg: JwtAlgorithm,
        kid: Option<&str>,
        signed: &str,
        signature: &[u8],
    ) -> Result<(), JwtError> {
        let kid_known =
            kid.is_some_and(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        let candidates = self.keys.iter().filter(|k| {
            k.alg() == alg
                && match kid {
                    Some(kid) if kid_known => k.kid.as_deref() == Some(kid),
                    Some(_) => k.kid.is_none(),
                    None => true,
                }
        });
        let mut tried = false;
        for key in candidates {
            tried = true;
            if key.verify(signed.as_bytes(), signature) {
                return Ok(());
            }
        }
        Err(if tried {
            JwtError::BadSignature
        } else {
            JwtError::UnknownKey
        })
    }
}

/// Splits a compact JWS after bounding its size and alphabet, so later steps see only
/// base64url text of known length.
fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("token too long"));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(JwtError::Malformed(
            "token has characters outside base64url",
        ));
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwtError::Malformed("token does not have three parts"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Malformed("empty header or payload"));
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(JwtError::Malformed("header too long"));
    }
    // Header, dot, payload: ASCII, so this slice is on a character boundary.
    let signed = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(JwtError::Malformed("token does not have three parts"))?;
    Ok(Parts {
        header,
        payload,
        signature,
        signed,
    })
}

/// Decodes and parses the header with the same JSON limits as the payload.
fn parse_header(encoded: &str) -> Result<Header, JwtError> {
    let json = decode_part(encoded, "header is not base64url")?;
    let mut object = claims::parse_object(&json, claims::Part::Header)?.0;
    let alg = match object.remove("alg") {
        Some(serde_json::Value::String(alg)) => alg,
        Some(_) => return Err(JwtError::Malformed("header alg is not a string")),
        None => return Err(JwtError::Malformed("header has no alg")),
    };
    let kid = match object.remove("kid") {
        Some(serde_json::Value::String(kid)) => Some(kid),
        Some(_) => return Err(JwtError::Malformed("header kid is not a string")),
        None => None,
    };
    Ok(Header {
        alg,
        kid,
        has_crit: object.contains_key("crit"),
    })
}

/// Strict base64url without padding; non-canonical trailing bits are refused, so every token
/// has exactly one encoding.
fn decode_part(encoded: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| JwtError::Malformed(what))
}

/// A header `alg` fit for an error message and a log line: at most 32 printable ASCII
/// characters, anything else replaced.
fn printable(alg: &str) -> String {
    alg.chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
