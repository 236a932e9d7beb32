//! Server side of one SCRAM-SHA-256 exchange: the proxy authenticating a connecting client
//! against a stored (or mock) verifier, following PostgreSQL's `auth-scram.c` behaviour.

use super::{
    hmac_sha256, is_valid_nonce, random_nonce, sha256, xor32, Attributes, ScramError, ScramKeys,
    ScramVerifier, BASE64,
};
use base64::Engine as _;
use std::fmt;
use subtle::ConstantTimeEq;

/// Server side of one SCRAM-SHA-256 exchange (RFC 5802/7677 as PostgreSQL implements it).
///
/// Steps must be called in order, once each. Any error is final: the state machine refuses
/// further input, so a client cannot retry a proof within one exchange.
pub struct ScramServer {
    verifier: ScramVerifier,
    server_nonce: String,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// The gs2 header exactly as sent ("n,," or "y,,"); `c=` must echo it.
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        /// client nonce + server nonce, which `r=` in client-final must repeat.
        full_nonce: Vec<u8>,
    },
    Done,
    Failed,
}

impl ScramServer {
    /// `verifier` is the user's (or a mock one); the server nonce is drawn from the OS here.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    /// Fixed server nonce, so tests can replay published vectors.
    pub(super) fn with_nonce(verifier: ScramVerifier, server_nonce: String) -> Self {
        Self {
            verifier,
            server_nonce,
            state: State::AwaitingClientFirst,
        }
    }

    /// Input: the SASLInitialResponse data (client-first-message, e.g. `n,,n=,r=abc`).
    /// Returns the server-first-message for AuthenticationSASLContinue.
    ///
    /// Rejects the 'p' channel binding flag (we offer no -PLUS mechanism), an authorization
    /// identity (PostgreSQL does not support one either), the mandatory-extension marker `m=`,
    /// anything other than `n=` then `r=`, and empty or non-printable nonces. The user name in
    /// `n=` is ignored, as in PostgreSQL: the startup packet's user is authoritative. Optional
    /// extensions after the nonce are ignored, as RFC 5802 requires.
    pub fn handle_client_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(self.fail_out_of_order());
        }
        let result = self.client_first_inner(client_first);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn client_first_inner(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        match msg.first() {
            Some(b'n' | b'y') => {}
            Some(b'p') => return Err(ScramError::UnsupportedChannelBinding),
            Some(_) => return Err(ScramError::Malformed("invalid channel binding flag")),
            None => return Err(ScramError::Malformed("empty client-first-message")),
        }
        if msg.get(1) != Some(&b',') {
            return Err(ScramError::Malformed(
                "expected ',' after channel binding flag",
            ));
        }
        match msg.get(2) {
            Some(b',') => {}
            Some(b'a') => {
                return Err(ScramError::Malformed(
                    "authorization identity is not supported",
                ))
            }
            _ => return Err(ScramError::Malformed("invalid gs2 header")),
        }
        let (gs2_header, bare) = msg.split_at(3);

        let mut attrs = Attributes::new(bare);
        let (name, _username) = attrs.next_any()?;
        match name {
            b'n' => {}
            b'm' => {
                return Err(ScramError::Malformed(
                    "mandatory extensions are not supported",
                ))
            }
            _ => return Err(ScramError::Malformed("expected user name attribute n=")),
        }
        let client_nonce = attrs.expect(b'r', "expected nonce attribute r=")?;
        if !is_valid_nonce(client_nonce) {
            return Err(ScramError::Malformed(
                "client nonce is empty or not printable",
            ));
        }
        while !attrs.is_empty() {
            attrs.next_any()?;
        }

        let mut full_nonce = client_nonce.to_vec();
        full_nonce.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = Vec::with_capacity(full_nonce.len() + 64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(&full_nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&self.verifier.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.verifier.iterations).as_bytes());

        self.state = State::AwaitingClientFinal {
            gs2_header: gs2_header.to_vec(),
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            full_nonce,
        };
        Ok(server_first)
    }

    /// Input: SASLResponse data (client-final-message `c=biws,r=...,p=...`).
    ///
    /// Checks that `c=` is the base64 of the gs2 header sent first, that `r=` is the full nonce,
    /// that `p=` is the last attribute with nothing after it (trailing data after the proof once
    /// allowed a bypass in another implementation), and then the proof in constant time. On
    /// success returns the server-final-message (`v=...`) for AuthenticationSASLFinal and the
    /// recovered client keys; a wrong password is [`ScramError::InvalidProof`].
    pub fn handle_client_final(
        &mut self,
        client_final: &[u8],
    ) -> Result<(Vec<u8>, ScramKeys), ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            full_nonce,
        } = state
        else {
            // Done and Failed stay terminal; AwaitingClientFirst is a protocol violation too.
            return Err(ScramError::OutOfOrder);
        };
        let result = self.verify_final(
            client_final,
            &gs2_header,
            &client_first_bare,
            &server_first,
            &full_nonce,
        );
        if result.is_ok() {
            self.state = State::Done;
        }
        result
    }

    fn verify_final(
        &self,
        msg: &[u8],
        gs2_header: &[u8],
        client_first_bare: &[u8],
        server_first: &[u8],
        full_nonce: &[u8],
    ) -> Result<(Vec<u8>, ScramKeys), ScramError> {
        let mut attrs = Attributes::new(msg);
        let cbind = attrs.expect(b'c', "expected channel binding attribute c=")?;
        if cbind != BASE64.encode(gs2_header).as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match the gs2 header",
            ));
        }
        let nonce = attrs.expect(b'r', "expected nonce attribute r=")?;
        if nonce != full_nonce {
            return Err(ScramError::NonceMismatch);
        }
        // Optional extensions may precede the proof; the proof must be the last attribute.
        let (proof_start, proof_b64) = loop {
            let start = attrs.position();
            let (name, value) = attrs.next_any()?;
            if name == b'p' {
                break (start, value);
            }
        };
        if !attrs.is_empty() {
            return Err(ScramError::Malformed("data after the proof"));
        }
        let proof: [u8; 32] = BASE64
            .decode(proof_b64)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;
        // `proof_start` points just past the ',' that precedes "p=".
        let without_proof = &msg[..proof_start - 1];

        let auth_message: [&[u8]; 5] = [client_first_bare, b",", server_first, b",", without_proof];
        let client_signature = hmac_sha256(&self.verifier.stored_key, &auth_message);
        let client_key = xor32(&proof, &client_signature);
        let matches = sha256(&client_key).ct_eq(&self.verifier.stored_key);
        if !bool::from(matches) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        let keys = ScramKeys {
            client_key,
            server_key: self.verifier.server_key,
        };
        Ok((server_final, keys))
    }

    /// True once a proof has been verified; the caller may then trust the recovered keys.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn fail_out_of_order(&mut self) -> ScramError {
        self.state = State::Failed;
        ScramError::OutOfOrder
    }
}

/// Only the step is shown: the verifier's keys must not reach logs.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::AwaitingClientFinal { .. } => "awaiting client-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("step", &step)
            .finish_non_exhaustive()
    }
}
