//! Test helpers for the JWT module: token building and signing with ring (HS256 via hmac),
//! the committed test keys under `tests/fixtures/jwt/`, settings builders and a temporary
//! directory for key files made at test time.

use super::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The fixed "current time" of the tests.
pub const NOW: u64 = 1_750_000_000;
pub const TENANT: &str = "01JZ8Q1W3E5R7T9Y2V4X6Z8B0C";
pub const HS_SECRET: &str = "hs256-test-secret-0123456789abcdef";
pub const RSA_KID: &str = "test-rsa-1";
pub const ED_KID: &str = "test-ed25519-1";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Something that signs `header.payload`.
pub enum Signer {
    Hs256(Vec<u8>),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    pub fn hs256(secret: impl AsRef<[u8]>) -> Signer {
        Signer::Hs256(secret.as_ref().to_vec())
    }

    /// The committed RSA test key.
    pub fn rsa() -> Signer {
        let der = PrivatePkcs8KeyDer::from_pem_file(fixtures().join("rsa_private_pkcs8.pem"))
            .expect("RSA fixture PEM");
        Signer::Rsa(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("RSA fixture key"))
    }

    /// The committed Ed25519 test key (PKCS#8 v1 as OpenSSL writes it).
    pub fn ed25519_fixture() -> Signer {
        let der = PrivatePkcs8KeyDer::from_pem_file(fixtures().join("ed25519_private_pkcs8.pem"))
            .expect("Ed25519 fixture PEM");
        Signer::Ed25519(
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                .expect("Ed25519 fixture key"),
        )
    }

    /// A fresh Ed25519 key and its public point.
    pub fn ed25519_generated() -> (Signer, [u8; 32]) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse generated");
        let public: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
        (Signer::Ed25519(pair), public)
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Signer::Hs256(secret) => {
                let mut mac =
                    <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(secret).unwrap();
                hmac::Mac::update(&mut mac, message);
                hmac::Mac::finalize(mac).into_bytes().to_vec()
            }
            Signer::Rsa(pair) => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut out)
                    .expect("RSA sign");
                out
            }
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

/// A compact token from raw header and payload bytes (which need not be valid JSON).
pub fn token_raw(header: &[u8], payload: &[u8], signer: &Signer) -> String {
    let signed = format!("{}.{}", b64(header), b64(payload));
    let signature = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(signature))
}

pub fn token(header: &Value, claims: &Value, signer: &Signer) -> String {
    token_raw(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        signer,
    )
}

pub fn header(alg: &str, kid: Option<&str>) -> Value {
    match kid {
        Some(kid) => json!({"alg": alg, "typ": "JWT", "kid": kid}),
        None => json!({"alg": alg, "typ": "JWT"}),
    }
}

/// Claims that pass the default settings at [`NOW`].
pub fn claims() -> Value {
    json!({
        "sub": "user-42",
        "tenant_id": TENANT,
        "role": "write",
        "iat": NOW - 10,
        "exp": NOW + 600,
    })
}

/// `claims` with one member set.
pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

/// `claims` with one member removed.
pub fn without(mut claims: Value, name: &str) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.remove(name);
    }
    claims
}

pub fn key(alg: JwtAlgorithm) -> JwtKeySettings {
    JwtKeySettings {
        kid: None,
        alg,
        secret: None,
        secret_file: None,
        secret_env: None,
        public_key_file: None,
        jwks_file: None,
    }
}

pub fn hs_key(secret: &str, kid: Option<&str>) -> JwtKeySettings {
    JwtKeySettings {
        kid: kid.map(str::to_owned),
        secret: Some(secret.to_owned()),
        ..key(JwtAlgorithm::HS256)
    }
}

pub fn pem_key(alg: JwtAlgorithm, file: &str, kid: Option<&str>) -> JwtKeySettings {
    JwtKeySettings {
        kid: kid.map(str::to_owned),
        public_key_file: Some(PathBuf::from(file)),
        ..key(alg)
    }
}

pub fn jwks_key(alg: JwtAlgorithm, file: &str) -> JwtKeySettings {
    JwtKeySettings {
        jwks_file: Some(PathBuf::from(file)),
        ..key(alg)
    }
}

/// Settings with the documented defaults and the given keys.
pub fn settings(keys: Vec<JwtKeySettings>) -> JwtSettings {
    JwtSettings {
        issuer: None,
        audience: None,
        tenant_claim: default_tenant_claim(),
        role_claim: default_role_claim(),
        leeway_secs: default_leeway_secs(),
        require_exp: default_require_exp(),
        keys,
        server_users: super::JwtServerUsers {
            read: "app_ro".into(),
            write: "app".into(),
        },
        default_role: None,
    }
}

/// A verifier over the fixtures directory.
pub fn verifier(settings: &JwtSettings) -> JwtVerifier {
    JwtVerifier::new(settings, &fixtures()).expect("settings load")
}

pub fn hs_verifier() -> JwtVerifier {
    verifier(&settings(vec![hs_key(HS_SECRET, None)]))
}

pub fn config_error(settings: &JwtSettings, base: &Path) -> String {
    match JwtVerifier::new(settings, base) {
        Err(JwtError::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// SPKI PEM for a raw Ed25519 public key (RFC 8410 fixed prefix + the 32-byte point).
pub fn ed25519_spki_pem(public: &[u8; 32]) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(public);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("launch-proxy-jwt-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), contents).expect("write temp file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
