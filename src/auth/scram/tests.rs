//! Unit tests for the SCRAM module's happy paths: published and PostgreSQL-generated vectors,
//! full exchanges in both directions (password and key passthrough), verifier format, mock
//! verifiers. Shared vectors and helpers are `pub(super)` for `hostile_tests`.

use super::*;

// RFC 7677 section 3 test vector.
pub(super) const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
pub(super) const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
pub(super) const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
pub(super) const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
pub(super) const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
pub(super) const RFC_CLIENT_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
pub(super) const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// Read from pg_authid of a PostgreSQL 15 cluster after `CREATE ROLE u LOGIN PASSWORD 'pw'`
// and `CREATE ROLE s2 LOGIN PASSWORD 'pässwörd'` (default scram-sha-256, 4096 iterations).
pub(super) const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:O7F733y4xzhZgM67DyiwTA==$\
    aHT2XM+YZiW1ullEHBrxYmbSO0dXFjEGG4Cl4L+ZcNM=:yiOXBjAhd305Ayg6SkJobUb2mTDqQC3ZSDF3l9Bybn4=";
pub(super) const PG_PASSWORD: &str = "pw";
pub(super) const PG_VERIFIER_NON_ASCII: &str = "SCRAM-SHA-256$4096:6RAvxdKiC3QC2tnNjefCeQ==$\
    Ya+CMU0dtYhTJX7Jfv6p3cFi77AXAY4Wz6fRP6Mnfxg=:keYibFVeMFF6crP+ZWqa6X0EitAOOXIYwI1xGj2Pps0=";
pub(super) const PG_PASSWORD_NON_ASCII: &str = "pässwörd";

pub(super) fn rfc_verifier() -> ScramVerifier {
    let salt = BASE64.decode(RFC_SALT).unwrap();
    ScramVerifier::from_password("pencil", Some(&salt), 4096)
}

pub(super) fn password(p: &str) -> ScramCredentials {
    ScramCredentials::Password(p.to_owned())
}

/// Runs a whole exchange; returns the client's and the server's final results.
pub(super) fn exchange(
    client: &mut ScramClient,
    server: &mut ScramServer,
) -> Result<ScramKeys, ScramError> {
    let server_first = server.handle_client_first(&client.client_first())?;
    let client_final = client.handle_server_first(&server_first)?;
    let (server_final, keys) = server.handle_client_final(&client_final)?;
    client.handle_server_final(&server_final)?;
    assert!(client.is_authenticated() && server.is_authenticated());
    Ok(keys)
}

/// A server that has answered a fresh client's first message, plus that client's final message.
pub(super) fn server_awaiting_final(pw: &str) -> (ScramServer, Vec<u8>) {
    let mut server = ScramServer::new(ScramVerifier::from_password("secret", None, 4096));
    let mut client = ScramClient::new(password(pw));
    let server_first = server.handle_client_first(&client.client_first()).unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    (server, client_final)
}

#[test]
fn rfc7677_server_side() {
    let mut server = ScramServer::with_nonce(rfc_verifier(), RFC_SERVER_NONCE.to_owned());
    let server_first = server
        .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
    let (server_final, keys) = server
        .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
    let expected = ScramKeys::from_password("pencil", &BASE64.decode(RFC_SALT).unwrap(), 4096);
    assert_eq!(keys.client_key, expected.client_key);
    assert_eq!(keys.server_key, expected.server_key);
}

#[test]
fn rfc7677_client_side() {
    let mut client = ScramClient::with_nonce_and_user(password("pencil"), RFC_CLIENT_NONCE, "user");
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let client_final = client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    client
        .handle_server_final(RFC_SERVER_FINAL.as_bytes())
        .unwrap();
    assert!(client.is_authenticated());
}

#[test]
fn postgres_verifier_matches_derivation() {
    for (stored, pw) in [
        (PG_VERIFIER, PG_PASSWORD),
        (PG_VERIFIER_NON_ASCII, PG_PASSWORD_NON_ASCII),
    ] {
        let parsed = ScramVerifier::parse(stored).unwrap();
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), 16);
        let derived = ScramVerifier::from_password(pw, Some(&parsed.salt), parsed.iterations);
        assert_eq!(derived, parsed);
        assert_eq!(derived.to_string(), stored);
        exchange(
            &mut ScramClient::new(password(pw)),
            &mut ScramServer::new(parsed),
        )
        .unwrap();
    }
}

#[test]
fn round_trip_with_password() {
    let verifier = ScramVerifier::from_password("correct horse", None, 4096);
    let keys = exchange(
        &mut ScramClient::new(password("correct horse")),
        &mut ScramServer::new(verifier.clone()),
    )
    .unwrap();
    assert_eq!(sha256(&keys.client_key), verifier.stored_key);
    assert_eq!(keys.server_key, verifier.server_key);
}

#[test]
fn round_trip_with_recovered_keys() {
    let verifier = ScramVerifier::parse(PG_VERIFIER).unwrap();
    let keys = exchange(
        &mut ScramClient::new(password(PG_PASSWORD)),
        &mut ScramServer::new(verifier.clone()),
    )
    .unwrap();
    // Passthrough: the proxy logs in to "PostgreSQL" (same verifier) with the recovered keys.
    let keys_again = exchange(
        &mut ScramClient::new(ScramCredentials::Keys(keys.clone())),
        &mut ScramServer::new(verifier),
    )
    .unwrap();
    assert_eq!(keys_again.client_key, keys.client_key);
    // Keys for one verifier do not open another one.
    let other = ScramVerifier::from_password(PG_PASSWORD, None, 4096);
    let err = exchange(
        &mut ScramClient::new(ScramCredentials::Keys(keys)),
        &mut ScramServer::new(other),
    );
    assert_eq!(err.unwrap_err(), ScramError::InvalidProof);
}

#[test]
fn non_ascii_and_empty_passwords_round_trip() {
    for pw in ["", "pässwörd", "日本語 パスワード", "e\u{301}", "\u{a0}"] {
        let verifier = ScramVerifier::from_password(pw, None, 16);
        exchange(
            &mut ScramClient::new(password(pw)),
            &mut ScramServer::new(verifier),
        )
        .unwrap();
    }
}

#[test]
fn mock_verifier_is_stable_and_never_matches() {
    let secret = [7u8; 32];
    let a = ScramVerifier::mock("alice", &secret);
    let b = ScramVerifier::mock("alice", &secret);
    assert_eq!(a.salt, b.salt);
    assert_eq!(a.iterations, DEFAULT_ITERATIONS);
    assert_eq!(a.salt.len(), 16);
    assert_ne!(a.stored_key, b.stored_key);
    assert_ne!(a.salt, ScramVerifier::mock("bob", &secret).salt);
    assert_ne!(a.salt, ScramVerifier::mock("alice", &[8u8; 32]).salt);
    assert_eq!(ScramVerifier::parse(&a.to_string()).unwrap(), a);
    // Same error as a wrong password.
    for pw in ["", "alice", "password"] {
        let err = exchange(
            &mut ScramClient::new(password(pw)),
            &mut ScramServer::new(a.clone()),
        );
        assert_eq!(err.unwrap_err(), ScramError::InvalidProof);
    }
}

#[test]
fn gs2_y_flag_accepted_with_matching_binding() {
    let verifier = ScramVerifier::from_password("pw", None, 4096);
    let keys = ScramKeys::from_password("pw", &verifier.salt, 4096);
    let mut server = ScramServer::new(verifier.clone());
    let server_first = server.handle_client_first(b"y,,n=,r=clientnonce").unwrap();
    let nonce = &server_first[2..server_first.iter().position(|&c| c == b',').unwrap()];
    let mut without_proof = b"c=eSws,r=".to_vec();
    without_proof.extend_from_slice(nonce);
    let auth: [&[u8]; 5] = [
        b"n=,r=clientnonce",
        b",",
        &server_first,
        b",",
        &without_proof,
    ];
    let proof = xor32(&keys.client_key, &hmac_sha256(&verifier.stored_key, &auth));
    let mut client_final = without_proof.clone();
    client_final.extend_from_slice(format!(",p={}", BASE64.encode(proof)).as_bytes());
    server.handle_client_final(&client_final).unwrap();
}

#[test]
fn client_first_extensions_and_user_name_are_ignored() {
    let verifier = ScramVerifier::from_password("pw", None, 4096);
    let mut server = ScramServer::with_nonce(verifier, "S".to_owned());
    let first = server
        .handle_client_first(b"n,,n=someone=2Celse,r=abc,x=ext")
        .unwrap();
    assert!(first.starts_with(b"r=abcS,s="));
}

#[test]
fn verifier_parse_rejects_junk() {
    let good = ScramVerifier::parse(PG_VERIFIER).unwrap();
    let (params, keys) = PG_VERIFIER
        .split_once('$')
        .unwrap()
        .1
        .split_once('$')
        .unwrap();
    let bad = [
        String::new(),
        "SCRAM-SHA-256$".to_owned(),
        PG_VERIFIER.replacen("SCRAM-SHA-256", "SCRAM-SHA-1", 1),
        PG_VERIFIER.to_lowercase(),
        format!(" {PG_VERIFIER}"),
        format!("{PG_VERIFIER} "),
        format!("{PG_VERIFIER}$"),
        format!("{PG_VERIFIER}:AAAA"),
        format!("SCRAM-SHA-256${params}"),
        format!("SCRAM-SHA-256${keys}"),
        PG_VERIFIER.replacen("4096", "0", 1),
        PG_VERIFIER.replacen("4096", "", 1),
        PG_VERIFIER.replacen("4096", "-4096", 1),
        PG_VERIFIER.replacen("4096", "4096 ", 1),
        PG_VERIFIER.replacen("4096", "4294967296", 1),
        PG_VERIFIER.replacen("O7F733y4xzhZgM67DyiwTA==", "", 1),
        PG_VERIFIER.replacen("O7F733y4xzhZgM67DyiwTA==", "O7F733y4xzhZgM67DyiwTA", 1),
        PG_VERIFIER.replacen("O7F733y4xzhZgM67DyiwTA==", "O7F733y4xzhZgM67Dyiw*A==", 1),
        PG_VERIFIER.replacen("aHT2XM", "aHT2", 1),
        PG_VERIFIER.replacen("yiOXBj", "yiOXBjAAAA", 1),
        PG_VERIFIER.replacen(':', ";", 1),
        "md5a94b5ad1c0e9bc1f4bb74ed0f1d2d0a4".to_owned(),
    ];
    for s in bad {
        assert!(
            matches!(ScramVerifier::parse(&s), Err(ScramError::BadVerifier(_))),
            "{s}"
        );
    }
    assert!(ScramVerifier::is_verifier(PG_VERIFIER));
    assert!(!ScramVerifier::is_verifier(
        "md5a94b5ad1c0e9bc1f4bb74ed0f1d2d0a4"
    ));
    assert_eq!(good.to_string(), PG_VERIFIER);
}

#[test]
fn from_password_edge_arguments() {
    let v = ScramVerifier::from_password("pw", Some(&[]), 0);
    assert_eq!(v.salt.len(), 16);
    assert_eq!(v.iterations, DEFAULT_ITERATIONS);
    assert_eq!(ScramVerifier::parse(&v.to_string()).unwrap(), v);
    let random_a = ScramVerifier::from_password("pw", None, 1);
    let random_b = ScramVerifier::from_password("pw", None, 1);
    assert_ne!(random_a.salt, random_b.salt);
}

#[test]
fn debug_output_has_no_secrets() {
    let verifier = ScramVerifier::parse(PG_VERIFIER).unwrap();
    let keys = ScramKeys::from_password(PG_PASSWORD, &verifier.salt, 4096);
    let printed = format!(
        "{verifier:?} {keys:?} {:?} {:?} {:?}",
        ScramCredentials::Password("hunter2".to_owned()),
        ScramClient::new(password("hunter2")),
        ScramServer::new(verifier.clone()),
    );
    assert!(!printed.contains("hunter2"));
    for secret in [verifier.stored_key, verifier.server_key, keys.client_key] {
        assert!(!printed.contains(&BASE64.encode(secret)));
        assert!(!printed.contains(&format!("{secret:?}")));
        assert!(!printed.contains(&format!("{:?}", &secret[..4])[1..]));
    }
}

#[test]
fn passwords_are_saslprepped_as_postgres_does() {
    // Mapped to nothing (soft hyphen), a non-ASCII space, NFKC (the "fi" ligature).
    assert_eq!(&*normalize_password("soft\u{AD}hyphen"), b"softhyphen");
    assert_eq!(&*normalize_password("a\u{A0}b"), b"a b");
    assert_eq!(&*normalize_password("\u{FB01}ne"), b"fine");
    // Prohibited (a private-use character): the raw bytes, as pg_saslprep falls back to.
    let raw = "x\u{E000}y";
    assert_eq!(&*normalize_password(raw), raw.as_bytes());
    assert_eq!(&*normalize_password("plain ascii"), b"plain ascii");
}

/// Reconnects reuse the keys derived for a password and salt; another salt, iteration
/// count or password never gets them.
#[test]
fn derived_keys_are_reused_only_for_the_same_password_and_salt() {
    let fresh = |p: &str, s: &[u8], i| ScramKeys::from_password(p, s, i).client_key;
    let cached = |p: &str, s: &[u8], i| ScramKeys::from_password_cached(p, s, i).client_key;
    let (salt_a, salt_b) = (&b"salt-a-0123456789"[..], &b"salt-b-0123456789"[..]);
    let logins = [
        ("pw-one", salt_a, 4096),
        ("pw-one", salt_b, 4096),
        ("pw-one", salt_a, 4097),
        ("pw-two", salt_a, 4096),
    ];
    // Twice: the first round fills the cache, the second reads from it.
    for _ in 0..2 {
        for (password, salt, iterations) in logins {
            assert_eq!(
                cached(password, salt, iterations),
                fresh(password, salt, iterations),
                "{password} {iterations}"
            );
        }
    }
    assert_ne!(
        cached("pw-one", salt_a, 4096),
        cached("pw-two", salt_a, 4096)
    );
}
