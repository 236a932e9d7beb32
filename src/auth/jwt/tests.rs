//! Unit tests for the JWT module's accepting paths and claim rules: each algorithm and key
//! source, key selection by `kid`, time checks at their exact edges, issuer and audience, the
//! tenant and role claims, the config shape, and config errors that name the key at fault.

use super::test_util::*;
use super::*;
use serde_json::json;

#[test]
fn hs256_valid() {
    let token = token(&header("HS256", None), &claims(), &Signer::hs256(HS_SECRET));
    assert!(JwtVerifier::looks_like_jwt(&token));
    let identity = hs_verifier().verify(&token, NOW).unwrap();
    assert_eq!(
        identity,
        JwtIdentity {
            subject: Some("user-42".to_owned()),
            tenant: TENANT.to_owned(),
            role: Some("write".to_owned()),
            expires_at: Some(NOW + 600),
        }
    );
}

#[test]
fn rs256_valid_with_pem_file() {
    let v = verifier(&settings(vec![pem_key(
        JwtAlgorithm::RS256,
        "rsa_public.pem",
        None,
    )]));
    let token = token(&header("RS256", None), &claims(), &Signer::rsa());
    assert_eq!(v.verify(&token, NOW).unwrap().tenant, TENANT);
    // With a kid in the header and none configured, the kid-less key is used.
    let token = token_with_kid("RS256", "rotated-1", &Signer::rsa());
    assert_eq!(v.verify(&token, NOW).unwrap().tenant, TENANT);
}

fn token_with_kid(alg: &str, kid: &str, signer: &Signer) -> String {
    token(&header(alg, Some(kid)), &claims(), signer)
}

#[test]
fn eddsa_valid_with_generated_key() {
    let (signer, public) = Signer::ed25519_generated();
    let dir = TempDir::new();
    dir.write("ed.pem", ed25519_spki_pem(&public));
    let s = settings(vec![pem_key(JwtAlgorithm::EdDSA, "ed.pem", Some("ed-1"))]);
    let v = JwtVerifier::new(&s, dir.path()).unwrap();
    let token = token_with_kid("EdDSA", "ed-1", &signer);
    assert_eq!(
        v.verify(&token, NOW).unwrap().role.as_deref(),
        Some("write")
    );
    // Another Ed25519 key's signature does not verify.
    let (other, _) = Signer::ed25519_generated();
    let forged = token_with_kid("EdDSA", "ed-1", &other);
    assert_eq!(v.verify(&forged, NOW), Err(JwtError::BadSignature));
}

#[test]
fn eddsa_valid_with_openssl_pem() {
    let v = verifier(&settings(vec![pem_key(
        JwtAlgorithm::EdDSA,
        "ed25519_public.pem",
        None,
    )]));
    let token = token(
        &header("EdDSA", None),
        &claims(),
        &Signer::ed25519_fixture(),
    );
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn jwks_file_with_both_kinds() {
    let v = verifier(&settings(vec![
        jwks_key(JwtAlgorithm::RS256, "jwks.json"),
        jwks_key(JwtAlgorithm::EdDSA, "jwks.json"),
    ]));
    // The EC key in the file is skipped: one key per supported kind.
    assert_eq!(v.keys.len(), 2);
    let rsa = token_with_kid("RS256", RSA_KID, &Signer::rsa());
    let ed = token_with_kid("EdDSA", ED_KID, &Signer::ed25519_fixture());
    assert!(v.verify(&rsa, NOW).is_ok());
    assert!(v.verify(&ed, NOW).is_ok());
    // Without a kid every key of the header's algorithm is tried.
    let no_kid = token(&header("RS256", None), &claims(), &Signer::rsa());
    assert!(v.verify(&no_kid, NOW).is_ok());
    // A known kid with the other algorithm finds no key.
    let crossed = token_with_kid("RS256", ED_KID, &Signer::rsa());
    assert_eq!(v.verify(&crossed, NOW), Err(JwtError::UnknownKey));
    let unknown = token_with_kid("RS256", "nobody", &Signer::rsa());
    assert_eq!(v.verify(&unknown, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn jwks_built_from_ring_keys() {
    // n/e taken from ring's view of the private key, independent of our SPKI parser.
    let Signer::Rsa(pair) = Signer::rsa() else {
        unreachable!()
    };
    let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    let (ed, public) = Signer::ed25519_generated();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "r", "n": b64(&components.n), "e": b64(&components.e)},
        {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": b64(public)},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64([9u8; 32])},
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "alg": "PS256", "kid": "ps", "n": "AQAB", "e": "AQAB"},
    ]});
    let dir = TempDir::new();
    dir.write("keys.json", jwks.to_string());
    let s = settings(vec![
        jwks_key(JwtAlgorithm::RS256, "keys.json"),
        jwks_key(JwtAlgorithm::EdDSA, "keys.json"),
    ]);
    let v = JwtVerifier::new(&s, dir.path()).unwrap();
    assert!(v
        .verify(&token_with_kid("RS256", "r", &Signer::rsa()), NOW)
        .is_ok());
    assert!(v.verify(&token_with_kid("EdDSA", "e", &ed), NOW).is_ok());
}

#[test]
fn several_hs256_keys_are_picked_by_kid() {
    let other = "another-hs256-secret-0123456789abcdef";
    let v = verifier(&settings(vec![
        hs_key(HS_SECRET, Some("a")),
        hs_key(other, Some("b")),
    ]));
    let a = token_with_kid("HS256", "a", &Signer::hs256(HS_SECRET));
    let b = token_with_kid("HS256", "b", &Signer::hs256(other));
    assert!(v.verify(&a, NOW).is_ok());
    assert!(v.verify(&b, NOW).is_ok());
    // Key b's token labelled as key a is checked against a only.
    let swapped = token_with_kid("HS256", "a", &Signer::hs256(other));
    assert_eq!(v.verify(&swapped, NOW), Err(JwtError::BadSignature));
    // Without a kid both keys are tried.
    let plain = token(&header("HS256", None), &claims(), &Signer::hs256(other));
    assert!(v.verify(&plain, NOW).is_ok());
    // Every key has a kid, so an unknown kid has no fallback.
    let unknown = token_with_kid("HS256", "c", &Signer::hs256(HS_SECRET));
    assert_eq!(v.verify(&unknown, NOW), Err(JwtError::UnknownKey));
}

fn hs_claims_token(claims: &serde_json::Value) -> String {
    token(&header("HS256", None), claims, &Signer::hs256(HS_SECRET))
}

#[test]
fn expiry_with_default_leeway() {
    let v = hs_verifier();
    let t = hs_claims_token(&with(claims(), "exp", json!(NOW)));
    assert!(v.verify(&t, NOW).is_ok());
    assert!(v.verify(&t, NOW + 29).is_ok());
    assert_eq!(v.verify(&t, NOW + 30), Err(JwtError::Expired));
    assert_eq!(v.verify(&t, u64::MAX), Err(JwtError::Expired));
}

#[test]
fn expiry_without_leeway() {
    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.leeway_secs = 0;
    let v = verifier(&s);
    let t = hs_claims_token(&with(claims(), "exp", json!(NOW)));
    assert!(v.verify(&t, NOW - 1).is_ok());
    assert_eq!(v.verify(&t, NOW), Err(JwtError::Expired));
}

#[test]
fn not_before_edges() {
    let v = hs_verifier();
    let t = hs_claims_token(&with(claims(), "nbf", json!(NOW + 30)));
    assert!(v.verify(&t, NOW).is_ok(), "within leeway");
    assert_eq!(v.verify(&t, NOW - 1), Err(JwtError::NotYetValid));
    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.leeway_secs = 0;
    let strict = verifier(&s);
    assert_eq!(strict.verify(&t, NOW), Err(JwtError::NotYetValid));
    assert!(strict.verify(&t, NOW + 30).is_ok(), "nbf itself is valid");
}

#[test]
fn exp_requirement_and_number_forms() {
    let v = hs_verifier();
    let no_exp = hs_claims_token(&without(claims(), "exp"));
    assert_eq!(
        v.verify(&no_exp, NOW),
        Err(JwtError::MissingClaim("exp".to_owned()))
    );
    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.require_exp = false;
    assert_eq!(verifier(&s).verify(&no_exp, NOW).unwrap().expires_at, None);

    let float = hs_claims_token(&with(claims(), "exp", json!(NOW as f64 + 0.9)));
    assert_eq!(v.verify(&float, NOW).unwrap().expires_at, Some(NOW));
    let exponent = hs_claims_token(&with(claims(), "exp", json!(1.0e300)));
    assert_eq!(v.verify(&exponent, NOW).unwrap().expires_at, Some(u64::MAX));
    let negative = hs_claims_token(&with(claims(), "exp", json!(-5)));
    assert_eq!(v.verify(&negative, NOW), Err(JwtError::Expired));
    let text = hs_claims_token(&with(claims(), "exp", json!("1750000600")));
    assert!(matches!(v.verify(&text, NOW), Err(JwtError::Malformed(_))));
    let nbf_null = hs_claims_token(&with(claims(), "nbf", json!(null)));
    assert!(matches!(
        v.verify(&nbf_null, NOW),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn issuer_checks() {
    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.issuer = Some("https://idp.example/".to_owned());
    let v = verifier(&s);
    let good = hs_claims_token(&with(claims(), "iss", json!("https://idp.example/")));
    assert!(v.verify(&good, NOW).is_ok());
    let wrong = hs_claims_token(&with(claims(), "iss", json!("https://evil.example/")));
    assert_eq!(v.verify(&wrong, NOW), Err(JwtError::WrongIssuer));
    let typed = hs_claims_token(&with(claims(), "iss", json!(["https://idp.example/"])));
    assert_eq!(v.verify(&typed, NOW), Err(JwtError::WrongIssuer));
    let missing = hs_claims_token(&claims());
    assert_eq!(
        v.verify(&missing, NOW),
        Err(JwtError::MissingClaim("iss".to_owned()))
    );
}

#[test]
fn audience_string_and_array() {
    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.audience = Some("launch-proxy".to_owned());
    let v = verifier(&s);
    let check =
        |aud: serde_json::Value| v.verify(&hs_claims_token(&with(claims(), "aud", aud)), NOW);
    assert!(check(json!("launch-proxy")).is_ok());
    assert!(check(json!(["api", "launch-proxy"])).is_ok());
    assert!(check(json!([1, "launch-proxy"])).is_ok());
    assert_eq!(check(json!("api")), Err(JwtError::WrongAudience));
    assert_eq!(check(json!(["api", "web"])), Err(JwtError::WrongAudience));
    assert_eq!(check(json!([])), Err(JwtError::WrongAudience));
    assert_eq!(
        check(json!({"aud": "launch-proxy"})),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        v.verify(&hs_claims_token(&claims()), NOW),
        Err(JwtError::MissingClaim("aud".to_owned()))
    );
    // Without a configured audience, `aud` is not checked.
    let open = hs_verifier();
    assert!(open
        .verify(&hs_claims_token(&with(claims(), "aud", json!("api"))), NOW)
        .is_ok());
}

#[test]
fn tenant_claim_rules() {
    let v = hs_verifier();
    let missing = JwtError::MissingClaim("tenant_id".to_owned());
    for bad in [json!(null), json!(42), json!(""), json!([TENANT])] {
        let t = hs_claims_token(&with(claims(), "tenant_id", bad));
        assert_eq!(v.verify(&t, NOW), Err(missing.clone()));
    }
    let t = hs_claims_token(&without(claims(), "tenant_id"));
    assert_eq!(v.verify(&t, NOW), Err(missing));

    let mut s = settings(vec![hs_key(HS_SECRET, None)]);
    s.tenant_claim = "https://example.com/tenant".to_owned();
    s.role_claim = "access".to_owned();
    let custom = verifier(&s);
    let claims = json!({"https://example.com/tenant": "t1", "access": "read", "exp": NOW + 5});
    let identity = custom.verify(&hs_claims_token(&claims), NOW).unwrap();
    assert_eq!(identity.tenant, "t1");
    assert_eq!(identity.role.as_deref(), Some("read"));
    assert_eq!(identity.subject, None);
}

#[test]
fn role_claim_rules() {
    let v = hs_verifier();
    let role = |value: Option<serde_json::Value>| {
        let c = match value {
            Some(value) => with(claims(), "role", value),
            None => without(claims(), "role"),
        };
        v.verify(&hs_claims_token(&c), NOW).map(|i| i.role)
    };
    assert_eq!(role(Some(json!("read"))), Ok(Some("read".to_owned())));
    assert_eq!(role(Some(json!("write"))), Ok(Some("write".to_owned())));
    assert_eq!(role(None), Ok(None));
    for bad in [
        json!("admin"),
        json!("Write"),
        json!(1),
        json!(null),
        json!(["read"]),
    ] {
        assert_eq!(
            role(Some(bad)),
            Err(JwtError::MissingClaim("role".to_owned()))
        );
    }
    let sub = hs_claims_token(&with(claims(), "sub", json!(7)));
    assert!(matches!(v.verify(&sub, NOW), Err(JwtError::Malformed(_))));
}

#[test]
fn settings_shape_and_defaults() {
    let yaml =
        "keys:\n  - alg: HS256\n    secret_env: JWT_SECRET\n  - alg: RS256\n    kid: k1\n    \
                public_key_file: rsa.pem\n  - alg: EdDSA\n    jwks_file: jwks.json\n\
         server_users: { read: app_ro, write: app }\n";
    let s: JwtSettings = serde_norway::from_str(yaml).unwrap();
    assert_eq!(s.tenant_claim, "tenant_id");
    assert_eq!(s.role_claim, "role");
    assert_eq!(s.leeway_secs, 30);
    assert!(s.require_exp);
    assert_eq!(s.issuer, None);
    let algs: Vec<JwtAlgorithm> = s.keys.iter().map(|k| k.alg).collect();
    assert_eq!(
        algs,
        [
            JwtAlgorithm::HS256,
            JwtAlgorithm::RS256,
            JwtAlgorithm::EdDSA
        ]
    );
    let round: JwtSettings = serde_norway::from_str(&serde_norway::to_string(&s).unwrap()).unwrap();
    assert_eq!(round.keys[1].kid.as_deref(), Some("k1"));
    for bad in [
        "keys: []\nextra: 1\n",
        "keys:\n  - alg: HS256\n    secrett: x\n",
        "keys:\n  - alg: none\n",
        "keys:\n  - alg: hs256\n",
        "keys:\n  - alg: ES256\n",
        "issuer: x\n",
    ] {
        assert!(serde_norway::from_str::<JwtSettings>(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_output_hides_secrets() {
    let entry = hs_key(HS_SECRET, Some("k"));
    assert!(!format!("{entry:?}").contains(HS_SECRET));
    let v = hs_verifier();
    let shown = format!("{v:?}");
    assert!(!shown.contains(HS_SECRET) && shown.contains("HS256"));
}

#[test]
fn secret_sources() {
    let dir = TempDir::new();
    dir.write("secret.txt", format!("{HS_SECRET}\n"));
    let from_file = JwtKeySettings {
        secret_file: Some("secret.txt".into()),
        ..key(JwtAlgorithm::HS256)
    };
    let v = JwtVerifier::new(&settings(vec![from_file]), dir.path()).unwrap();
    assert!(v.verify(&hs_claims_token(&claims()), NOW).is_ok());

    let from_env = JwtKeySettings {
        secret_env: Some("LAUNCH_PROXY_TEST_JWT".into()),
        ..key(JwtAlgorithm::HS256)
    };
    let s = settings(vec![from_env]);
    let env = |name: &str| (name == "LAUNCH_PROXY_TEST_JWT").then(|| HS_SECRET.to_owned());
    let v = JwtVerifier::with_env(&s, dir.path(), &env).unwrap();
    assert!(v.verify(&hs_claims_token(&claims()), NOW).is_ok());
    let message = match JwtVerifier::with_env(&s, dir.path(), &|_| None) {
        Err(JwtError::Config(message)) => message,
        other => panic!("{other:?}"),
    };
    assert!(message.contains("LAUNCH_PROXY_TEST_JWT"), "{message}");
}

#[test]
fn config_errors_name_the_key() {
    let base = fixtures();
    let err = |keys: Vec<JwtKeySettings>| config_error(&settings(keys), &base);
    assert!(err(vec![]).contains("no key"));
    let short = err(vec![hs_verifier_key(), hs_key("short", Some("tiny"))]);
    assert!(
        short.starts_with("jwt.keys[1] (kid \"tiny\"), HS256:"),
        "{short}"
    );
    assert!(short.contains("at least 32"), "{short}");
    let both = JwtKeySettings {
        secret_env: Some("X".into()),
        ..hs_verifier_key()
    };
    assert!(err(vec![both]).contains("only one"));
    assert!(err(vec![key(JwtAlgorithm::HS256)]).contains("needs secret"));
    let hs_with_pem = JwtKeySettings {
        public_key_file: Some("rsa_public.pem".into()),
        ..hs_verifier_key()
    };
    assert!(err(vec![hs_with_pem]).contains("not public_key_file"));
    let rs_with_secret = JwtKeySettings {
        secret: Some(HS_SECRET.into()),
        ..key(JwtAlgorithm::RS256)
    };
    assert!(err(vec![rs_with_secret]).contains("not a secret"));
    assert!(err(vec![key(JwtAlgorithm::EdDSA)]).contains("needs public_key_file"));
    let missing = err(vec![pem_key(
        JwtAlgorithm::RS256,
        "absent.pem",
        Some("gone"),
    )]);
    assert!(
        missing.contains("kid \"gone\"") && missing.contains("absent.pem"),
        "{missing}"
    );
    let crossed = err(vec![pem_key(
        JwtAlgorithm::RS256,
        "ed25519_public.pem",
        None,
    )]);
    assert!(crossed.contains("Ed25519"), "{crossed}");
    let crossed = err(vec![pem_key(JwtAlgorithm::EdDSA, "rsa_public.pem", None)]);
    assert!(crossed.contains("RSA"), "{crossed}");
    let private = err(vec![pem_key(
        JwtAlgorithm::RS256,
        "rsa_private_pkcs8.pem",
        None,
    )]);
    assert!(private.contains("PUBLIC KEY"), "{private}");
    let kid_with_jwks = JwtKeySettings {
        kid: Some("k".into()),
        ..jwks_key(JwtAlgorithm::RS256, "jwks.json")
    };
    assert!(err(vec![kid_with_jwks]).contains("kid cannot be set"));
    let not_jwks = err(vec![jwks_key(JwtAlgorithm::RS256, "rsa_public.pem")]);
    assert!(not_jwks.contains("not a JWKS"), "{not_jwks}");

    let mut s = settings(vec![hs_verifier_key()]);
    s.leeway_secs = 3601;
    assert!(config_error(&s, &base).contains("leeway"));
    let mut s = settings(vec![hs_verifier_key()]);
    s.role_claim = s.tenant_claim.clone();
    assert!(config_error(&s, &base).contains("different"));
}

#[test]
fn jwks_config_errors() {
    let dir = TempDir::new();
    let load = |jwks: serde_json::Value| {
        dir.write("k.json", jwks.to_string());
        config_error(
            &settings(vec![jwks_key(JwtAlgorithm::RS256, "k.json")]),
            dir.path(),
        )
    };
    let private =
        load(json!({"keys": [{"kty": "RSA", "kid": "p", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}));
    assert!(private.contains("private key material"), "{private}");
    let none = load(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64([1u8; 32])}]}));
    assert!(none.contains("no RS256 signing key"), "{none}");
    let small =
        load(json!({"keys": [{"kty": "RSA", "kid": "s", "n": b64([0xffu8; 128]), "e": "AQAB"}]}));
    assert!(
        small.contains("kid \"s\"") && small.contains("2048"),
        "{small}"
    );
    let bad_b64 = load(json!({"keys": [{"kty": "RSA", "n": "not base64!", "e": "AQAB"}]}));
    assert!(bad_b64.contains("n is not base64url"), "{bad_b64}");
    let no_kty = load(json!({"keys": [{"n": "AQAB"}]}));
    assert!(no_kty.contains("no kty"), "{no_kty}");
}

fn hs_verifier_key() -> JwtKeySettings {
    hs_key(HS_SECRET, None)
}
