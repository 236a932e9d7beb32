//! JWKS files (RFC 7517): the key sets identity providers publish. We read the signing keys of
//! one algorithm from a local copy; fetching a JWKS over the network is deliberately left to
//! deployment tooling, so a login never waits on (or trusts) a remote endpoint.
//!
//! Keys of kinds we do not verify with (EC, encryption keys, other algorithms) are skipped,
//! because IdPs routinely publish them next to the signing keys. A key of the right kind that
//! cannot be used is an error, as is private key material, which does not belong on the proxy.

use super::claims::nesting_within;
use super::der::{self, PublicKey};
use super::keys::VerifyKey;
use super::{JwtAlgorithm, MAX_JSON_DEPTH};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Members that only private JWKs carry (RFC 7518 6.3.2, 6.2.2, RFC 8037 2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Map<String, Value>>,
}

/// Loads the keys for `alg` from JWKS text: RSA keys for RS256, OKP Ed25519 keys for EdDSA.
pub(super) fn load(text: &[u8], alg: JwtAlgorithm) -> Result<Vec<VerifyKey>, String> {
    if !nesting_within(text, MAX_JSON_DEPTH) {
        return Err("JWKS JSON is nested too deeply".to_owned());
    }
    let set: JwkSet = serde_json::from_slice(text)
        .map_err(|e| format!("not a JWKS (a JSON object with a \"keys\" array): {e}"))?;
    let mut loaded = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(format!("keys[{index}]: kid is not a string")),
        };
        let name = match &kid {
            Some(kid) => format!("keys[{index}] (kid {kid:?})"),
            None => format!("keys[{index}]"),
        };
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(format!(
                "{name} holds private key material (\"{member}\"); give the public JWKS"
            ));
        }
        if let Some(key) = parse_jwk(jwk, alg).map_err(|m| format!("{name}: {m}"))? {
            loaded.push(VerifyKey::new(kid, key));
        }
    }
    if loaded.is_empty() {
        return Err(format!("no {alg} signing key in the JWKS"));
    }
    Ok(loaded)
}

/// One JWK: `Ok(None)` when it is not a signing key for `alg`, an error when it claims to be
/// one but is unusable.
fn parse_jwk(jwk: &Map<String, Value>, alg: JwtAlgorithm) -> Result<Option<PublicKey>, String> {
    let text = |name: &str| match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(format!("{name} is not a string")),
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if text("alg")?.is_some_and(|a| a != alg.as_str()) {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Ok(None);
        }
    }
    let kty = text("kty")?.ok_or("no kty")?;
    match (alg, kty) {
        (JwtAlgorithm::RS256, "RSA") => {
            let n = base64url(text("n")?.ok_or("RSA key without n")?, "n")?;
            let e = base64url(text("e")?.ok_or("RSA key without e")?, "e")?;
            der::rsa_key(&n, &e).map(Some).map_err(str::to_owned)
        }
        (JwtAlgorithm::EdDSA, "OKP") => {
            if text("crv")? != Some("Ed25519") {
                // Ed448 and the X25519/X448 key-agreement curves.
                return Ok(None);
            }
            let x = base64url(text("x")?.ok_or("Ed25519 key without x")?, "x")?;
            let point: [u8; 32] = x
                .as_slice()
                .try_into()
                .map_err(|_| "Ed25519 x is not 32 bytes")?;
            Ok(Some(PublicKey::Ed25519(point)))
        }
        _ => Ok(None),
    }
}

/// base64url as RFC 7518 writes it; stray `=` padding from lenient writers is tolerated.
fn base64url(value: &str, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("{name} is not base64url"))
}
