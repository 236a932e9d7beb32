//! Verification keys: loading one configured key entry (secret, PEM file or JWKS file) and
//! checking a signature with a loaded key.
//!
//! A loaded key's algorithm follows from its kind (HMAC secret, RSA, Ed25519) and cannot be
//! chosen by a token, which is what rules out algorithm confusion: RSA key bytes are never
//! handed to HMAC, however the token's header is written.

use super::der::{self, PublicKey};
use super::{jwks, JwtAlgorithm, JwtKeySettings};
use hmac::{KeyInit, Mac};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

/// RFC 7518 3.2: an HS256 key must be at least as long as the hash output. Shorter secrets
/// fall to offline guessing from a single captured token.
const MIN_HMAC_SECRET_LEN: usize = 32;

/// Largest key or JWKS file we read; real ones are a few KB.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

type HmacSha256 = hmac::Hmac<Sha256>;

/// One key ready for verification.
#[derive(Clone)]
pub(super) struct VerifyKey {
    pub(super) kid: Option<String>,
    material: Material,
}

#[derive(Clone)]
enum Material {
    Hmac(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ed25519([u8; 32]),
}

impl VerifyKey {
    pub(super) fn new(kid: Option<String>, key: PublicKey) -> VerifyKey {
        let material = match key {
            PublicKey::Rsa { n, e } => Material::Rsa { n, e },
            PublicKey::Ed25519(point) => Material::Ed25519(point),
        };
        VerifyKey { kid, material }
    }

    /// The only algorithm this key verifies.
    pub(super) fn alg(&self) -> JwtAlgorithm {
        match self.material {
            Material::Hmac(_) => JwtAlgorithm::HS256,
            Material::Rsa { .. } => JwtAlgorithm::RS256,
            Material::Ed25519(_) => JwtAlgorithm::EdDSA,
        }
    }

    /// Whether `signature` over `signed` verifies with this key (HMAC compared in constant
    /// time). Any length or encoding problem is simply a failed verification.
    pub(super) fn verify(&self, signed: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Hmac(secret) => match <HmacSha256 as KeyInit>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(signed);
                    mac.verify_slice(signature).is_ok()
                }
                Err(_) => false,
            },
            Material::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, signed, signature)
                .is_ok(),
            Material::Ed25519(point) => UnparsedPublicKey::new(&sig::ED25519, point)
                .verify(signed, signature)
                .is_ok(),
        }
    }
}

/// Loads the key(s) of one config entry. The error is a message without the entry's name,
/// which the caller prefixes.
pub(super) fn load_entry(
    entry: &JwtKeySettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<VerifyKey>, String> {
    let has_secret =
        entry.secret.is_some() || entry.secret_file.is_some() || entry.secret_env.is_some();
    let has_public = entry.public_key_file.is_some() || entry.jwks_file.is_some();
    match entry.alg {
        JwtAlgorithm::HS256 => {
            if has_public {
                return Err("HS256 takes secret, secret_file or secret_env, \
                            not public_key_file or jwks_file"
                    .to_owned());
            }
            let secret = resolve_secret(entry, base_dir, env)?;
            if secret.len() < MIN_HMAC_SECRET_LEN {
                return Err(format!(
                    "the HS256 secret is {} bytes; at least {MIN_HMAC_SECRET_LEN} are required",
                    secret.len()
                ));
            }
            Ok(vec![VerifyKey {
                kid: entry.kid.clone(),
                material: Material::Hmac(secret.into_bytes()),
            }])
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
            if has_secret {
                return Err(format!(
                    "{} verifies with a public key: give public_key_file or jwks_file, \
                     not a secret",
                    entry.alg
                ));
            }
            match (&entry.public_key_file, &entry.jwks_file) {
                (Some(file), None) => {
                    let path = base_dir.join(file);
                    let key = load_pem(&path, entry.alg)?;
                    Ok(vec![VerifyKey::new(entry.kid.clone(), key)])
                }
                (None, Some(file)) => {
                    if entry.kid.is_some() {
                        return Err("kid cannot be set with jwks_file; \
                                    the JWKS gives each key its kid"
                            .to_owned());
                    }
                    let path = base_dir.join(file);
                    let text = read_limited(&path)?;
                    jwks::load(&text, entry.alg).map_err(|m| format!("{}: {m}", path.display()))
                }
                (Some(_), Some(_)) => {
                    Err("give either public_key_file or jwks_file, not both".to_owned())
                }
                (None, None) => Err(format!("{} needs public_key_file or jwks_file", entry.alg)),
            }
        }
    }
}

/// Exactly one of the three secret sources; a file's trailing newline (from `echo`) is not
/// part of the secret.
fn resolve_secret(
    entry: &JwtKeySettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match (&entry.secret, &entry.secret_file, &entry.secret_env) {
        (Some(secret), None, None) => Ok(secret.clone()),
        (None, Some(file), None) => {
            let path = base_dir.join(file);
            let bytes = read_limited(&path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("secret_file {} is not UTF-8", path.display()))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (None, None, Some(name)) => {
            env(name).ok_or_else(|| format!("secret_env: environment variable {name} is not set"))
        }
        (None, None, None) => Err("HS256 needs secret, secret_file or secret_env".to_owned()),
        _ => Err("give only one of secret, secret_file and secret_env".to_owned()),
    }
}

/// Reads a PEM `PUBLIC KEY` block and checks that the key fits the entry's algorithm.
fn load_pem(path: &Path, alg: JwtAlgorithm) -> Result<PublicKey, String> {
    let pem = read_limited(path)?;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "{}: no PEM \"PUBLIC KEY\" block (an SPKI public key, as `openssl pkey -pubout` \
             writes; PKCS#1 \"RSA PUBLIC KEY\", private keys and certificates are not accepted)",
            path.display()
        )
    })?;
    let key = der::parse_spki(spki.as_ref()).map_err(|m| format!("{}: {m}", path.display()))?;
    match (&key, alg) {
        (PublicKey::Rsa { .. }, JwtAlgorithm::RS256)
        | (PublicKey::Ed25519(_), JwtAlgorithm::EdDSA) => Ok(key),
        (PublicKey::Rsa { .. }, _) => Err(format!(
            "{} holds an RSA key, which verifies RS256, not {alg}",
            path.display()
        )),
        (PublicKey::Ed25519(_), _) => Err(format!(
            "{} holds an Ed25519 key, which verifies EdDSA, not {alg}",
            path.display()
        )),
    }
}

/// Reads a whole file of at most [`MAX_KEY_FILE_LEN`] bytes, naming the path on failure.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(format!(
            "{} is larger than {MAX_KEY_FILE_LEN} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}
