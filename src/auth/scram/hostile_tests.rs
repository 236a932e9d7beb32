//! Unit tests for the SCRAM module's failure paths: wrong passwords, tampered or truncated
//! messages, refused features, steps out of order, and mutated or random input that must
//! produce errors, never panics or a successful login.

use super::tests::*;
use super::*;

#[test]
fn wrong_password_is_invalid_proof() {
    let (mut server, client_final) = server_awaiting_final("not the secret");
    assert_eq!(
        server.handle_client_final(&client_final).unwrap_err(),
        ScramError::InvalidProof
    );
    assert!(!server.is_authenticated());
    // No second try within one exchange.
    assert_eq!(
        server.handle_client_final(&client_final).unwrap_err(),
        ScramError::OutOfOrder
    );
}

#[test]
fn tampered_nonce_is_rejected() {
    let (mut server, client_final) = server_awaiting_final("secret");
    let text = String::from_utf8(client_final).unwrap();
    let (head, proof) = text.split_once(",p=").unwrap();
    let tampered = format!("{}X,p={proof}", head);
    assert_eq!(
        server.handle_client_final(tampered.as_bytes()).unwrap_err(),
        ScramError::NonceMismatch
    );
    // A nonce that only echoes the client's part is just as wrong.
    let (mut server, _) = server_awaiting_final("secret");
    let client_part = &head["c=biws,r=".len().."c=biws,r=".len() + 24];
    let short = format!("c=biws,r={client_part},p={proof}");
    assert_eq!(
        server.handle_client_final(short.as_bytes()).unwrap_err(),
        ScramError::NonceMismatch
    );
}

#[test]
fn tampered_channel_binding_is_rejected() {
    for cbind in ["eSws", "", "biws=", "cD10bHMtdW5pcXVlLCw=", "bix="] {
        let (mut server, client_final) = server_awaiting_final("secret");
        let text = String::from_utf8(client_final).unwrap();
        let tampered = text.replacen("c=biws", &format!("c={cbind}"), 1);
        assert!(matches!(
            server.handle_client_final(tampered.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }
}

#[test]
fn trailing_junk_after_proof_is_rejected() {
    for junk in [",", ",x=1", ",p=AAAA", "junk", "=", "\0", " ", "\n"] {
        let (mut server, mut client_final) = server_awaiting_final("secret");
        client_final.extend_from_slice(junk.as_bytes());
        let result = server.handle_client_final(&client_final);
        assert!(
            matches!(result, Err(ScramError::Malformed(_))),
            "{junk:?}: {result:?}"
        );
        assert!(!server.is_authenticated());
    }
}

#[test]
fn proof_must_be_last_and_well_formed() {
    let (_, client_final) = server_awaiting_final("secret");
    let text = String::from_utf8(client_final).unwrap();
    let (head, proof) = text.split_once(",p=").unwrap();
    for bad in [
        head.to_owned(),
        format!("{head},p="),
        format!("{head},p={}", &proof[..proof.len() - 4]),
        format!("{head},p={proof}AAAA"),
        format!("p={proof},{head}"),
        format!("{head},x,p={proof}"),
    ] {
        let (mut server, _) = server_awaiting_final("secret");
        assert!(server.handle_client_final(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn channel_binding_flag_p_is_unsupported() {
    let mut server = ScramServer::new(rfc_verifier());
    assert_eq!(
        server
            .handle_client_first(b"p=tls-server-end-point,,n=,r=abc")
            .unwrap_err(),
        ScramError::UnsupportedChannelBinding
    );
}

#[test]
fn malformed_client_first_is_rejected() {
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"n,,",
        b",,n=,r=abc",
        b"x,,n=,r=abc",
        b"N,,n=,r=abc",
        b"n,a=admin,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=,",
        b"n,,n=",
        b"n,,n=,r=",
        b"n,,n=,r=a b",
        b"n,,n=,r=a\x7f",
        b"n,,n=,r=\xc3\xa9",
        b"n,,n=,r=abc,",
        b"n,,n=,r=abc,,",
        b"n,,n=,r=abc,1=x",
        b"n,,m=ext,n=,r=abc",
        b"n,,n=,x=1,r=abc",
        b"n,,n=,m=1,r=abc",
        b"n,,n=,,r=abc",
        b"n,,n,r=abc",
        b"n,,\xff\xfe",
        b"\0",
    ];
    for case in cases {
        let mut server = ScramServer::new(rfc_verifier());
        let result = server.handle_client_first(case);
        assert!(
            matches!(result, Err(ScramError::Malformed(_))),
            "{case:?}: {result:?}"
        );
        assert_eq!(
            server
                .handle_client_final(b"c=biws,r=abc,p=AAAA")
                .unwrap_err(),
            ScramError::OutOfOrder
        );
    }
}

#[test]
fn garbage_client_final_is_rejected() {
    let cases: &[&[u8]] = &[
        b"",
        b",",
        b"c=",
        b"c=biws",
        b"c=biws,",
        b"r=x,c=biws,p=AAAA",
        b"c=biws,p=AAAA",
        b"\xff\xff\xff",
    ];
    for case in cases {
        let (mut server, _) = server_awaiting_final("secret");
        assert!(server.handle_client_final(case).is_err(), "{case:?}");
    }
}

#[test]
fn server_steps_out_of_order() {
    let mut server = ScramServer::new(rfc_verifier());
    assert_eq!(
        server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );
    // The failure is final.
    assert_eq!(
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );

    let mut server = ScramServer::with_nonce(rfc_verifier(), RFC_SERVER_NONCE.to_owned());
    server
        .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );

    let mut server = ScramServer::with_nonce(rfc_verifier(), RFC_SERVER_NONCE.to_owned());
    server
        .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    server
        .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap();
    assert_eq!(
        server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );
    assert!(format!("{server:?}").contains("failed"));
}

#[test]
fn client_steps_out_of_order() {
    let mut client = ScramClient::new(password("pw"));
    assert_eq!(
        client
            .handle_server_final(RFC_SERVER_FINAL.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );

    let mut client = ScramClient::with_nonce_and_user(password("pencil"), RFC_CLIENT_NONCE, "user");
    client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .unwrap();
    assert_eq!(
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );
    assert_eq!(
        client
            .handle_server_final(RFC_SERVER_FINAL.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );

    let mut client = ScramClient::with_nonce_and_user(password("pencil"), RFC_CLIENT_NONCE, "user");
    client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .unwrap();
    client
        .handle_server_final(RFC_SERVER_FINAL.as_bytes())
        .unwrap();
    assert_eq!(
        client
            .handle_server_final(RFC_SERVER_FINAL.as_bytes())
            .unwrap_err(),
        ScramError::OutOfOrder
    );
}

#[test]
fn client_rejects_bad_server_first() {
    let n = RFC_CLIENT_NONCE;
    let cases: Vec<(String, ScramError)> = vec![
        (
            format!("r=other{n}X,s={RFC_SALT},i=4096"),
            ScramError::NonceMismatch,
        ),
        (
            format!("r={n},s={RFC_SALT},i=4096"),
            ScramError::NonceMismatch,
        ),
        (
            format!("r=rOprNG,s={RFC_SALT},i=4096"),
            ScramError::NonceMismatch,
        ),
    ];
    for (msg, expected) in cases {
        let mut client = ScramClient::with_nonce_and_user(password("pencil"), n, "user");
        assert_eq!(
            client.handle_server_first(msg.as_bytes()).unwrap_err(),
            expected
        );
    }
    let malformed = [
        String::new(),
        format!("r={n}X"),
        format!("r={n}X,s={RFC_SALT}"),
        format!("r={n}X,s={RFC_SALT},i=0"),
        format!("r={n}X,s={RFC_SALT},i=10000001"),
        format!("r={n}X,s={RFC_SALT},i=99999999999"),
        format!("r={n}X,s={RFC_SALT},i=-1"),
        format!("r={n}X,s={RFC_SALT},i=+4096"),
        format!("r={n}X,s={RFC_SALT},i="),
        format!("r={n}X,s={RFC_SALT},i=4096,"),
        format!("r={n}X,s={RFC_SALT},i=4096,x=1"),
        format!("r={n}X,s=,i=4096"),
        format!("r={n}X,s=!!!,i=4096"),
        format!("r={n}X,i=4096,s={RFC_SALT}"),
        format!("r={n}X y,s={RFC_SALT},i=4096"),
        format!("m=1,r={n}X,s={RFC_SALT},i=4096"),
        "e=other-error".to_owned(),
    ];
    for msg in malformed {
        let mut client = ScramClient::with_nonce_and_user(password("pencil"), n, "user");
        let result = client.handle_server_first(msg.as_bytes());
        assert!(
            matches!(result, Err(ScramError::Malformed(_))),
            "{msg}: {result:?}"
        );
    }
}

#[test]
fn client_checks_server_final() {
    let fresh = || {
        let mut c = ScramClient::with_nonce_and_user(password("pencil"), RFC_CLIENT_NONCE, "user");
        c.handle_server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        c
    };
    assert_eq!(
        fresh().handle_server_final(b"e=invalid-proof").unwrap_err(),
        ScramError::ServerError("invalid-proof".to_owned())
    );
    let wrong = format!("v={}", BASE64.encode([0u8; 32]));
    assert_eq!(
        fresh().handle_server_final(wrong.as_bytes()).unwrap_err(),
        ScramError::InvalidProof
    );
    for bad in [
        String::new(),
        "v=".to_owned(),
        format!("{RFC_SERVER_FINAL},x=1"),
        format!("{RFC_SERVER_FINAL}="),
        format!("{RFC_SERVER_FINAL},"),
        RFC_SERVER_FINAL[..RFC_SERVER_FINAL.len() - 4].to_owned(),
        RFC_SERVER_FINAL.replacen("v=", "w=", 1),
    ] {
        let mut client = fresh();
        let result = client.handle_server_final(bad.as_bytes());
        assert!(
            matches!(result, Err(ScramError::Malformed(_))),
            "{bad}: {result:?}"
        );
        assert!(!client.is_authenticated());
    }
}

/// Deterministic pseudo-random mutations of valid messages: no input may panic, and no mutated
/// client-final may authenticate.
#[test]
fn mutated_messages_never_panic_or_authenticate() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let verifier = ScramVerifier::from_password("pw", None, 1);
    for _ in 0..400 {
        let mut client = ScramClient::new(password("pw"));
        let mut server = ScramServer::new(verifier.clone());
        let server_first = server.handle_client_first(&client.client_first()).unwrap();
        let original = client.handle_server_first(&server_first).unwrap();
        let mut mutated = original.clone();
        let pos = (next() as usize) % mutated.len();
        match next() % 3 {
            0 => mutated[pos] ^= (next() as u8) | 1,
            1 => mutated.truncate(pos),
            _ => mutated.insert(pos, next() as u8),
        }
        if mutated != original {
            assert!(server.handle_client_final(&mutated).is_err());
        }
        // Feed random bytes to every entry point of fresh machines.
        let junk: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
        let _ = ScramServer::new(verifier.clone()).handle_client_first(&junk);
        let _ = ScramClient::new(password("pw")).handle_server_first(&junk);
        let _ = ScramVerifier::parse(&String::from_utf8_lossy(&junk));
        let mut c = ScramClient::new(password("pw"));
        if c.handle_server_first(&[b"r=", &c.client_first()[8..], b"x,s=QQ==,i=1"].concat())
            .is_ok()
        {
            assert!(c.handle_server_final(&junk).is_err());
        }
    }
}
