//! Client side of one SCRAM-SHA-256 exchange: the proxy logging in to PostgreSQL, either with a
//! configured password or with keys recovered from the connecting client (passthrough).

use super::{
    hmac_sha256, is_valid_nonce, parse_decimal_u32, random_nonce, sha256, xor32, Attributes,
    ScramError, ScramKeys, BASE64, MAX_ITERATIONS,
};
use base64::Engine as _;
use std::fmt;
use subtle::ConstantTimeEq;

/// What the proxy proves its identity with.
#[derive(Clone)]
pub enum ScramCredentials {
    /// A plaintext password; salted with the server's salt and iteration count.
    Password(String),
    /// ClientKey/ServerKey recovered by [`super::ScramServer`]; works whenever PostgreSQL
    /// stores the same verifier, and needs neither the salt nor the iteration count.
    Keys(ScramKeys),
}

/// Never prints the password or key bytes.
impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(..)"),
            Self::Keys(_) => f.write_str("Keys(..)"),
        }
    }
}

/// Client side of one SCRAM-SHA-256 exchange, used by the proxy to log in to PostgreSQL.
///
/// We send the gs2 flag 'n' (no channel binding): the proxy-to-server link may or may not use
/// TLS, and we never advertise SCRAM-SHA-256-PLUS. Any error is final for this exchange.
pub struct ScramClient {
    credentials: ScramCredentials,
    client_nonce: String,
    /// Value of `n=`; always empty in production (PostgreSQL ignores it). Tests set it to
    /// replay the RFC 7677 vector, which names a user.
    sasl_user: String,
    state: State,
}

enum State {
    Initial,
    AwaitingServerFinal { server_signature: [u8; 32] },
    Done,
    Failed,
}

/// gs2 header for "client does not support channel binding", and its base64 for `c=`.
const GS2_HEADER: &str = "n,,";
const GS2_HEADER_B64: &str = "biws";

impl ScramClient {
    /// Draws a random client nonce (18 bytes, base64) from the OS.
    pub fn new(credentials: ScramCredentials) -> Self {
        Self::with_nonce(credentials, random_nonce())
    }

    /// Fixed client nonce, so tests can replay published vectors.
    pub(super) fn with_nonce(credentials: ScramCredentials, client_nonce: String) -> Self {
        Self {
            credentials,
            client_nonce,
            sasl_user: String::new(),
            state: State::Initial,
        }
    }

    /// Fixed nonce and a (pre-escaped) SASL user name, for the RFC 7677 test vector.
    #[cfg(test)]
    pub(super) fn with_nonce_and_user(
        credentials: ScramCredentials,
        client_nonce: &str,
        sasl_user: &str,
    ) -> Self {
        let mut client = Self::with_nonce(credentials, client_nonce.to_owned());
        client.sasl_user = sasl_user.to_owned();
        client
    }

    /// The SASLInitialResponse payload, `n,,n=,r=<nonce>`; send it with mechanism
    /// [`super::SCRAM_SHA_256`]. The user name is left empty because PostgreSQL ignores it
    /// and takes the user from the startup packet.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.sasl_user, self.client_nonce)
    }

    /// Given AuthenticationSASLContinue data (server-first-message), returns the
    /// client-final-message for SASLResponse.
    ///
    /// The server nonce must extend ours (otherwise the exchange could be replayed), the salt
    /// must be non-empty base64, and the iteration count within 1..=[`MAX_ITERATIONS`] so a
    /// hostile server cannot make us spin. With [`ScramCredentials::Password`] this runs Hi(),
    /// which costs one HMAC per iteration (a few milliseconds at the default 4096), once per
    /// password and salt: later logins reuse the keys.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(ScramError::OutOfOrder);
        }
        match self.server_first_inner(server_first) {
            Ok((client_final, server_signature)) => {
                self.state = State::AwaitingServerFinal { server_signature };
                Ok(client_final)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    fn server_first_inner(&self, msg: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        let mut attrs = Attributes::new(msg);
        let (name, nonce) = attrs.next_any()?;
        match name {
            b'r' => {}
            b'm' => {
                return Err(ScramError::Malformed(
                    "mandatory extensions are not supported",
                ))
            }
            _ => return Err(ScramError::Malformed("expected nonce attribute r=")),
        }
        let ours = self.client_nonce.as_bytes();
        if !nonce.starts_with(ours) || nonce.len() == ours.len() {
            return Err(ScramError::NonceMismatch);
        }
        if !is_valid_nonce(nonce) {
            return Err(ScramError::Malformed("server nonce is not printable"));
        }
        let salt = attrs.expect(b's', "expected salt attribute s=")?;
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("salt is empty"));
        }
        let iterations = attrs.expect(b'i', "expected iteration count attribute i=")?;
        let iterations = parse_decimal_u32(iterations)
            .ok_or(ScramError::Malformed("iteration count is not a number"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Malformed("iteration count out of range"));
        }
        if !attrs.is_empty() {
            return Err(ScramError::Malformed("data after the iteration count"));
        }

        let derived;
        let keys = match &self.credentials {
            ScramCredentials::Password(password) => {
                derived = ScramKeys::from_password_cached(password, &salt, iterations);
                &derived
            }
            ScramCredentials::Keys(keys) => keys,
        };
        let stored_key = sha256(&keys.client_key);

        let mut without_proof = format!("c={GS2_HEADER_B64},r=").into_bytes();
        without_proof.extend_from_slice(nonce);
        let bare = self.client_first_bare();
        let auth_message: [&[u8]; 5] = [bare.as_bytes(), b",", msg, b",", &without_proof];
        let client_signature = hmac_sha256(&stored_key, &auth_message);
        let proof = xor32(&keys.client_key, &client_signature);
        let server_signature = hmac_sha256(&keys.server_key, &auth_message);

        let mut client_final = without_proof;
        client_final.extend_from_slice(b",p=");
        client_final.extend_from_slice(BASE64.encode(proof).as_bytes());
        Ok((client_final, server_signature))
    }

    /// Given AuthenticationSASLFinal data, verifies the server signature `v=` in constant time,
    /// proving the server knows our verifier (not just an impostor accepting anything). An `e=`
    /// attribute becomes [`ScramError::ServerError`].
    pub fn handle_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingServerFinal { server_signature } = state else {
            return Err(ScramError::OutOfOrder);
        };
        if let Some(error) = server_final.strip_prefix(b"e=") {
            return Err(ScramError::ServerError(
                String::from_utf8_lossy(error).into_owned(),
            ));
        }
        let mut attrs = Attributes::new(server_final);
        let verifier = attrs.expect(b'v', "expected server signature attribute v=")?;
        if !attrs.is_empty() {
            return Err(ScramError::Malformed("data after the server signature"));
        }
        let received: [u8; 32] = BASE64
            .decode(verifier)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(ScramError::Malformed(
                "server signature is not 32 bytes of base64",
            ))?;
        if !bool::from(received.ct_eq(&server_signature)) {
            return Err(ScramError::InvalidProof);
        }
        self.state = State::Done;
        Ok(())
    }

    /// True once the server's signature has been verified.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

/// Only the step is shown: credentials must not reach logs.
impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.state {
            State::Initial => "initial",
            State::AwaitingServerFinal { .. } => "awaiting server-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramClient")
            .field("step", &step)
            .finish_non_exhaustive()
    }
}
