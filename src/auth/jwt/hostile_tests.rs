//! Unit tests for hostile tokens: `alg: none`, algorithm confusion, tampering with each part,
//! duplicate and deeply nested JSON, size limits, and random or mutated input that must end in
//! an error (never a panic, never an identity).

use super::test_util::*;
use super::*;
use serde_json::json;

/// A verifier that trusts one key of every kind, so only the checks under test can refuse.
fn all_kinds() -> JwtVerifier {
    verifier(&settings(vec![
        hs_key(HS_SECRET, Some("hs")),
        pem_key(JwtAlgorithm::RS256, "rsa_public.pem", Some(RSA_KID)),
        pem_key(JwtAlgorithm::EdDSA, "ed25519_public.pem", Some(ED_KID)),
    ]))
}

fn valid_tokens() -> Vec<String> {
    vec![
        token(
            &header("HS256", Some("hs")),
            &claims(),
            &Signer::hs256(HS_SECRET),
        ),
        token(&header("RS256", Some(RSA_KID)), &claims(), &Signer::rsa()),
        token(
            &header("EdDSA", Some(ED_KID)),
            &claims(),
            &Signer::ed25519_fixture(),
        ),
    ]
}

#[test]
fn alg_none_is_refused() {
    let v = all_kinds();
    let body = b64(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let head = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        let unsigned = format!("{head}.{body}.");
        assert!(JwtVerifier::looks_like_jwt(&unsigned), "{alg}");
        assert_eq!(
            v.verify(&unsigned, NOW),
            Err(JwtError::UnsupportedAlgorithm(alg.to_owned()))
        );
        // A signature made with the HS256 secret does not make `none` acceptable either.
        let signed = token(&json!({"alg": alg}), &claims(), &Signer::hs256(HS_SECRET));
        assert_eq!(
            v.verify(&signed, NOW),
            Err(JwtError::UnsupportedAlgorithm(alg.to_owned()))
        );
    }
}

#[test]
fn other_algorithms_are_refused() {
    let v = all_kinds();
    for alg in [
        "HS384", "HS512", "RS512", "PS256", "ES256", "Ed25519", "hs256", " HS256",
    ] {
        let t = token(&json!({"alg": alg}), &claims(), &Signer::hs256(HS_SECRET));
        assert_eq!(
            v.verify(&t, NOW),
            Err(JwtError::UnsupportedAlgorithm(alg.to_owned()))
        );
    }
    // The echoed alg is shortened and made printable for logs.
    let long = format!("{}\u{7}\n", "A".repeat(100));
    let t = token(&json!({"alg": long}), &claims(), &Signer::hs256(HS_SECRET));
    assert_eq!(
        v.verify(&t, NOW),
        Err(JwtError::UnsupportedAlgorithm("A".repeat(32)))
    );
    let t = token(
        &json!({"alg": "x\u{7}y"}),
        &claims(),
        &Signer::hs256(HS_SECRET),
    );
    assert_eq!(
        v.verify(&t, NOW),
        Err(JwtError::UnsupportedAlgorithm("x?y".to_owned()))
    );
}

#[test]
fn hs256_signed_with_rsa_public_key_is_refused() {
    let v = verifier(&settings(vec![pem_key(
        JwtAlgorithm::RS256,
        "rsa_public.pem",
        Some(RSA_KID),
    )]));
    let pem = std::fs::read(fixtures().join("rsa_public.pem")).unwrap();
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem)
            .unwrap()
            .to_vec()
    };
    for secret in [pem.clone(), der] {
        let signer = Signer::hs256(&secret);
        for kid in [Some(RSA_KID), None, Some("other")] {
            let t = token(&header("HS256", kid), &claims(), &signer);
            assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKey), "{kid:?}");
        }
    }
    // With an HS256 key configured too, the RSA key bytes are still not its secret.
    let v = all_kinds();
    let t = token(&header("HS256", None), &claims(), &Signer::hs256(&pem));
    assert_eq!(v.verify(&t, NOW), Err(JwtError::BadSignature));
    let t = token(
        &header("HS256", Some(RSA_KID)),
        &claims(),
        &Signer::hs256(&pem),
    );
    assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn signatures_of_one_kind_do_not_pass_as_another() {
    let v = all_kinds();
    let claims = claims();
    let cases = [
        token(
            &header("RS256", Some(RSA_KID)),
            &claims,
            &Signer::ed25519_fixture(),
        ),
        token(&header("EdDSA", Some(ED_KID)), &claims, &Signer::rsa()),
        token(&header("RS256", None), &claims, &Signer::hs256(HS_SECRET)),
        token(&header("EdDSA", None), &claims, &Signer::hs256(HS_SECRET)),
    ];
    for t in cases {
        assert_eq!(v.verify(&t, NOW), Err(JwtError::BadSignature), "{t}");
    }
}

#[test]
fn unknown_kid_is_refused() {
    let v = all_kinds();
    let t = token(&header("RS256", Some("retired")), &claims(), &Signer::rsa());
    assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKey));
    let t = token(
        &header("HS256", Some(ED_KID)),
        &claims(),
        &Signer::hs256(HS_SECRET),
    );
    assert_eq!(v.verify(&t, NOW), Err(JwtError::UnknownKey));
}

#[test]
fn tampering_with_any_part_is_caught() {
    let v = all_kinds();
    let forged_claims =
        b64(with(claims(), "tenant_id", json!("01OTHERTENANT0000000000000")).to_string());
    for t in valid_tokens() {
        assert!(v.verify(&t, NOW).is_ok());
        let parts: Vec<&str> = t.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);
        // Payload swapped for another tenant's.
        let swapped = format!("{h}.{forged_claims}.{s}");
        assert_eq!(v.verify(&swapped, NOW), Err(JwtError::BadSignature));
        // Header re-encoded with an extra member (same alg and kid).
        let mut head: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        head["x"] = json!(1);
        let reheaded = format!("{}.{p}.{s}", b64(head.to_string()));
        assert_eq!(v.verify(&reheaded, NOW), Err(JwtError::BadSignature));
        // One bit of the signature flipped; signature truncated; signature dropped.
        let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{h}.{p}.{}", b64(&sig));
        assert_eq!(v.verify(&flipped, NOW), Err(JwtError::BadSignature));
        let short = format!("{h}.{p}.{}", b64(&sig[..sig.len() - 1]));
        assert_eq!(v.verify(&short, NOW), Err(JwtError::BadSignature));
        assert_eq!(
            v.verify(&format!("{h}.{p}."), NOW),
            Err(JwtError::BadSignature)
        );
    }
}

#[test]
fn mutated_tokens_never_verify() {
    let v = all_kinds();
    for t in valid_tokens() {
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            let mut mutated = bytes.to_vec();
            mutated[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let mutated = String::from_utf8(mutated).unwrap();
            assert!(v.verify(&mutated, NOW).is_err(), "byte {i} of {t}");
            assert!(v.verify(&t[..i], NOW).is_err(), "prefix {i}");
        }
    }
}

#[test]
fn non_canonical_base64_is_refused() {
    let v = all_kinds();
    let t = &valid_tokens()[0];
    // An HS256 signature is 32 bytes: 43 characters whose last carries 2 unused bits.
    let (signed, sig) = t.rsplit_once('.').unwrap();
    let last = sig.as_bytes()[sig.len() - 1];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.iter().position(|&c| c == last).unwrap();
    let sibling = alphabet[index ^ 1] as char;
    let altered = format!("{signed}.{}{sibling}", &sig[..sig.len() - 1]);
    assert_eq!(
        v.verify(&altered, NOW),
        Err(JwtError::Malformed("signature is not base64url"))
    );
    let padded = format!("{t}=");
    assert!(matches!(
        v.verify(&padded, NOW),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn header_rules() {
    let v = all_kinds();
    let signer = Signer::hs256(HS_SECRET);
    let body = claims().to_string();
    let crit = token(
        &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        &claims(),
        &signer,
    );
    assert!(matches!(v.verify(&crit, NOW), Err(JwtError::Malformed(_))));
    let cases: [&[u8]; 7] = [
        br#"{"alg":"HS256","alg":"none"}"#,
        br#"{"alg":"HS256","kid":7}"#,
        br#"{"kid":"hs"}"#,
        br#"["HS256"]"#,
        br#"{"alg":"HS256""#,
        b"\xff\xfe",
        b"",
    ];
    for head in cases {
        let t = token_raw(head, body.as_bytes(), &signer);
        assert!(
            matches!(v.verify(&t, NOW), Err(JwtError::Malformed(_))),
            "{t}"
        );
        assert!(!JwtVerifier::looks_like_jwt(&t));
    }
    // Keys named in the header (jwk, jku, x5u) are ignored, never fetched or used.
    let (other, public) = Signer::ed25519_generated();
    let embedded = json!({"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(public)},
        "jku": "http://127.0.0.1:1/jwks.json"});
    let t = token(&embedded, &claims(), &other);
    assert_eq!(v.verify(&t, NOW), Err(JwtError::BadSignature));
}

#[test]
fn payload_rules_after_a_valid_signature() {
    let v = all_kinds();
    let signer = Signer::hs256(HS_SECRET);
    let head = header("HS256", Some("hs")).to_string();
    let exp = NOW + 60;
    let duplicate = format!(r#"{{"tenant_id":"{TENANT}","tenant_id":"evil","exp":{exp}}}"#);
    let deep = format!(
        r#"{{"tenant_id":"{TENANT}","exp":{exp},"x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let brackets_in_string = format!(
        r#"{{"tenant_id":"{TENANT}","exp":{exp},"x":"{}\""}}"#,
        "[".repeat(40)
    );
    let cases: Vec<Vec<u8>> = vec![
        duplicate.into_bytes(),
        deep.into_bytes(),
        b"[1,2]".to_vec(),
        b"null".to_vec(),
        b"\xff".to_vec(),
        br#"{"exp":1e400}"#.to_vec(),
        format!(r#"{{"tenant_id":"{TENANT}","exp":{exp}}} trailing"#).into_bytes(),
    ];
    for payload in cases {
        let t = token_raw(head.as_bytes(), &payload, &signer);
        assert!(
            matches!(v.verify(&t, NOW), Err(JwtError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(&payload)
        );
    }
    // Brackets inside strings do not count as nesting.
    let t = token_raw(head.as_bytes(), brackets_in_string.as_bytes(), &signer);
    assert!(v.verify(&t, NOW).is_ok());
}

#[test]
fn token_size_limit() {
    let v = all_kinds();
    let signer = Signer::hs256(HS_SECRET);
    let head = header("HS256", Some("hs"));
    let make = |pad: usize| {
        token(
            &head,
            &with(claims(), "pad", json!("x".repeat(pad))),
            &signer,
        )
    };
    // Each padding byte adds one or two base64 characters; walk to the largest token that fits.
    let mut pad = (MAX_TOKEN_LEN - make(0).len()) * 3 / 4;
    while make(pad + 1).len() <= MAX_TOKEN_LEN {
        pad += 1;
    }
    while make(pad).len() > MAX_TOKEN_LEN {
        pad -= 1;
    }
    let at_limit = make(pad);
    assert!(at_limit.len() > MAX_TOKEN_LEN - 3, "{}", at_limit.len());
    assert!(v.verify(&at_limit, NOW).is_ok());
    let over = make(pad + 1);
    assert!(over.len() > MAX_TOKEN_LEN);
    assert_eq!(
        v.verify(&over, NOW),
        Err(JwtError::Malformed("token too long"))
    );
    assert!(!JwtVerifier::looks_like_jwt(&over));
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(1 << 20),
        "b".repeat(1 << 20),
        "c".repeat(1 << 20)
    );
    assert_eq!(
        v.verify(&huge, NOW),
        Err(JwtError::Malformed("token too long"))
    );
    let long_sig = format!(
        "{}.{}",
        valid_tokens()[0],
        "A".repeat(MAX_SIGNATURE_LEN + 1)
    );
    assert!(v.verify(&long_sig, NOW).is_err());
    let (signed, _) = valid_tokens()[0]
        .rsplit_once('.')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let long_sig = format!("{signed}.{}", "A".repeat(MAX_SIGNATURE_LEN + 3));
    assert_eq!(
        v.verify(&long_sig, NOW),
        Err(JwtError::Malformed("signature too long"))
    );
}

#[test]
fn garbage_never_panics() {
    let v = all_kinds();
    let fixed = [
        "",
        ".",
        "..",
        "...",
        "a..",
        ".b.",
        "..c",
        "a.b",
        "a.b.c.d",
        "a.b.c",
        "====.====.====",
        "eyJ.eyJ.sig",
        "password123",
        "correct horse battery staple",
        "é.é.é",
        "\0.\0.\0",
        "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "e30.e30.e30",
    ];
    for input in fixed {
        assert!(v.verify(input, NOW).is_err(), "{input:?}");
        let _ = JwtVerifier::looks_like_jwt(input);
    }
    assert!(!JwtVerifier::looks_like_jwt("password123"));
    assert!(JwtVerifier::looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30."));
    // Deterministic xorshift noise: raw bytes, then base64url-ish text with dots.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_..";
    for round in 0..3000 {
        let len = (next() % 300) as usize;
        let text = if round % 2 == 0 {
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect()
        };
        assert!(v.verify(&text, NOW).is_err(), "{text:?}");
        let _ = JwtVerifier::looks_like_jwt(&text);
    }
    // Valid-looking header with a random payload and signature.
    let head = b64(r#"{"alg":"RS256","kid":"test-rsa-1"}"#);
    for _ in 0..200 {
        let payload: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
        let sig: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
        let t = format!("{head}.{}.{}", b64(payload), b64(sig));
        assert_eq!(v.verify(&t, NOW), Err(JwtError::BadSignature));
    }
}
