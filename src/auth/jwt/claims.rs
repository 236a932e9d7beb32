//! The payload of a verified token: JSON limits, a claims map that refuses duplicate names,
//! and the registered-claim checks (`exp`, `nbf`, `iss`, `aud`) plus the tenant and role
//! claims the proxy routes on.
//!
//! Duplicate claim names are refused rather than resolved: two parsers that pick different
//! duplicates (first vs last) would let one token mean two identities.

use super::{JwtError, JwtIdentity, JwtSettings, MAX_JSON_DEPTH};
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// The claim checks configured in [`JwtSettings`], copied out once.
#[derive(Clone, Debug)]
pub(super) struct ClaimRules {
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
    role_claim: String,
    leeway_secs: u64,
    require_exp: bool,
}

impl ClaimRules {
    pub(super) fn from_settings(settings: &JwtSettings) -> ClaimRules {
        ClaimRules {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            tenant_claim: settings.tenant_claim.clone(),
            role_claim: settings.role_claim.clone(),
            leeway_secs: settings.leeway_secs,
            require_exp: settings.require_exp,
        }
    }
}

/// A top-level JSON object (never an array: serde would happily read a struct from one)
/// whose member names are unique. Used for both the header and the claims.
#[derive(Debug)]
pub(super) struct JsonObject(pub(super) Map<String, Value>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonObject, D::Error> {
        struct UniqueKeys;
        impl<'de> Visitor<'de> for UniqueKeys {
            type Value = JsonObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with unique member names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<JsonObject, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    if map.contains_key(&name) {
                        return Err(A::Error::custom("duplicate member name"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(name, value);
                }
                Ok(JsonObject(map))
            }
        }
        deserializer.deserialize_map(UniqueKeys)
    }
}

/// Whether `json` nests arrays and objects at most `max_depth` deep. A linear scan that
/// tracks strings, run before serde so deep input is refused without recursion.
pub(super) fn nesting_within(json: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Parses a decoded header or payload (`part` names it in errors): a JSON object with
/// bounded nesting and unique member names.
pub(super) fn parse_object(json: &[u8], part: Part) -> Result<JsonObject, JwtError> {
    let (too_deep, invalid) = match part {
        Part::Header => (
            "header JSON nested too deeply",
            "header is not a JSON object with unique member names",
        ),
        Part::Payload => (
            "payload JSON nested too deeply",
            "payload is not a JSON object with unique claim names",
        ),
    };
    if !nesting_within(json, MAX_JSON_DEPTH) {
        return Err(JwtError::Malformed(too_deep));
    }
    serde_json::from_slice(json).map_err(|_| JwtError::Malformed(invalid))
}

/// Which part of the token [`parse_object`] is reading.
#[derive(Clone, Copy)]
pub(super) enum Part {
    Header,
    Payload,
}

/// Applies the time, issuer and audience checks, then extracts the identity.
pub(super) fn validate(
    rules: &ClaimRules,
    claims: &JsonObject,
    now: u64,
) -> Result<JwtIdentity, JwtError> {
    let claims = &claims.0;
    let expires_at = numeric_date(claims.get("exp"), "exp is not a number")?;
    match expires_at {
        // RFC 7519 4.1.4: the current time must be before `exp`.
        Some(exp) if now >= exp.saturating_add(rules.leeway_secs) => return Err(JwtError::Expired),
        None if rules.require_exp => return Err(JwtError::MissingClaim("exp".to_owned())),
        _ => {}
    }
    // RFC 7519 4.1.5: the token must not be accepted before `nbf`.
    if let Some(nbf) = numeric_date(claims.get("nbf"), "nbf is not a number")? {
        if now.saturating_add(rules.leeway_secs) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(want) = &rules.issuer {
        match claims.get("iss") {
            None => return Err(JwtError::MissingClaim("iss".to_owned())),
            Some(Value::String(iss)) if iss == want => {}
            Some(_) => return Err(JwtError::WrongIssuer),
        }
    }
    if let Some(want) = &rules.audience {
        let listed = match claims.get("aud") {
            None => return Err(JwtError::MissingClaim("aud".to_owned())),
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want.as_str())),
            Some(_) => false,
        };
        if !listed {
            return Err(JwtError::WrongAudience);
        }
    }
    let tenant = match claims.get(&rules.tenant_claim) {
        Some(Value::String(tenant)) if !tenant.is_empty() => tenant.clone(),
        _ => return Err(JwtError::MissingClaim(rules.tenant_claim.clone())),
    };
    // An unrecognised role is refused rather than mapped to a default: silently granting
    // either role to a token that asked for something else would be a guess.
    let role = match claims.get(&rules.role_claim) {
        None => None,
        Some(Value::String(role)) if role == "read" || role == "write" => Some(role.clone()),
        Some(_) => return Err(JwtError::MissingClaim(rules.role_claim.clone())),
    };
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(sub)) => Some(sub.clone()),
        Some(_) => return Err(JwtError::Malformed("sub is not a string")),
    };
    Ok(JwtIdentity {
        subject,
        tenant,
        role,
        expires_at,
    })
}

/// A NumericDate claim as whole seconds: integers as they are, fractions truncated (RFC 7519
/// allows fractional seconds; truncation moves a bound by less than a second, well inside any
/// leeway), values before the epoch as 0 and values past `u64::MAX` saturated, which decide
/// every check the same way the literal value would.
fn numeric_date(value: Option<&Value>, what: &'static str) -> Result<Option<u64>, JwtError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(JwtError::Malformed(what));
    };
    if let Some(unsigned) = number.as_u64() {
        return Ok(Some(unsigned));
    }
    if number.as_i64().is_some() {
        // Only negative integers get here.
        return Ok(Some(0));
    }
    match number.as_f64() {
        Some(float) if float.is_nan() => Err(JwtError::Malformed(what)),
        Some(float) if float <= 0.0 => Ok(Some(0)),
        // `as` truncates toward zero and saturates at u64::MAX.
        Some(float) => Ok(Some(float as u64)),
        None => Err(JwtError::Malformed(what)),
    }
}
