//! Startup parameters a login is refused for, rather than have them dropped unseen or let
//! through: what the startup packet asks for at its top level and in the `-c name=value`
//! (or `--name=value`) settings of its `options`, read once and checked in one place.

use super::session_params::{client_encoding_is_safe, parse_options};
use crate::error::{ClientError, ErrorKind};
use crate::protocol::codes;

/// The settings a startup packet asks for: its parameters, with those of `options` in
/// its place.
fn settings(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(params.len());
    for (k, v) in params {
        if k == "options" {
            all.extend(parse_options(v));
        } else {
            all.push((k.clone(), v.clone()));
        }
    }
    all
}

/// The first client encoding asked for that is not [`client_encoding_is_safe`], under any
/// spelling PostgreSQL takes for its name.
fn unsafe_encoding(settings: &[(String, String)]) -> Option<&str> {
    let is_encoding = |name: &str| {
        name.replace('-', "_")
            .eq_ignore_ascii_case("client_encoding")
    };
    settings
        .iter()
        .find(|(n, v)| is_encoding(n) && !client_encoding_is_safe(v))
        .map(|(_, v)| v.as_str())
}

/// A setting that would change who the session runs as or its tenant, which the
/// authenticated identity decides (PostgreSQL too refuses a `role` the user cannot take).
fn identity_setting(settings: &[(String, String)]) -> Option<String> {
    settings.iter().find_map(|(n, _)| {
        let name = n.to_ascii_lowercase();
        (matches!(name.as_str(), "role" | "session_authorization") || name.starts_with("app."))
            .then_some(name)
    })
}

/// Whether `default_transaction_read_only` is asked on. It takes effect as a transaction
/// starts, so it cannot follow a client from connection to connection (a tenant switch
/// carried in the next client's Query would start that client's transaction under it);
/// dropping it would give a client that asked for read-only a session that writes.
fn asks_read_only(settings: &[(String, String)]) -> bool {
    settings.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("default_transaction_read_only")
            && !matches!(
                v.to_ascii_lowercase().as_str(),
                "off" | "false" | "no" | "0"
            )
    })
}

/// Why a login that asked for `params` is refused, if it is.
pub fn refusal(params: &[(String, String)]) -> Option<ClientError> {
    let asked = settings(params);
    // Server connections speak UTF8 and are shared: another client encoding is set per
    // transaction like any session parameter. Encodings whose multi-byte characters can
    // contain ASCII quote or backslash bytes are refused: the statement guard's lexer
    // could be fooled by them (see tenant::guard).
    if let Some(enc) = unsafe_encoding(&asked) {
        return Some(
            ClientError::fatal(
                ErrorKind::Protocol,
                codes::FEATURE_NOT_SUPPORTED,
                format!("client_encoding \"{enc}\" is not supported by launch-proxy"),
            )
            .with_hint("use UTF8"),
        );
    }
    if let Some(name) = identity_setting(&asked) {
        return Some(
            ClientError::fatal(
                ErrorKind::Auth,
                codes::INSUFFICIENT_PRIVILEGE,
                format!("parameter \"{name}\" cannot be set at login through launch-proxy"),
            )
            .with_detail("the session's role and tenant come from its authentication"),
        );
    }
    if asks_read_only(&asked) {
        return Some(
            ClientError::fatal(
                ErrorKind::Protocol,
                codes::FEATURE_NOT_SUPPORTED,
                "parameter \"default_transaction_read_only\" cannot be set at login through launch-proxy",
            )
            .with_hint(
                "log in as a user of the read role, or begin transactions with BEGIN READ ONLY",
            ),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(k: &str, v: &str) -> Vec<(String, String)> {
        settings(&[(k.to_owned(), v.to_owned())])
    }

    #[test]
    fn encodings() {
        let unsafe_in = |k: &str, v: &str| unsafe_encoding(&asked(k, v)).map(str::to_owned);
        assert_eq!(
            unsafe_in("Client_Encoding", "SJIS").as_deref(),
            Some("SJIS")
        );
        assert_eq!(
            unsafe_in("options", "-c a=1 --client-encoding=big5").as_deref(),
            Some("big5")
        );
        assert_eq!(unsafe_in("options", "-c client_encoding=LATIN1"), None);
        assert_eq!(unsafe_in("application_name", "SJIS"), None);
    }

    #[test]
    fn identity_and_read_only() {
        assert_eq!(
            identity_setting(&asked("options", "-c Role=x")).as_deref(),
            Some("role")
        );
        assert_eq!(
            identity_setting(&asked("app.tenant_id", "t")).as_deref(),
            Some("app.tenant_id")
        );
        assert_eq!(identity_setting(&asked("search_path", "public")), None);
        assert!(asks_read_only(&asked(
            "options",
            "-c default_transaction_read_only=on"
        )));
        assert!(!asks_read_only(&asked(
            "default_transaction_read_only",
            "OFF"
        )));
        let code = |k: &str, v: &str| refusal(&[(k.to_owned(), v.to_owned())]).map(|e| e.code);
        assert_eq!(
            code("client_encoding", "SJIS"),
            Some(codes::FEATURE_NOT_SUPPORTED)
        );
        assert_eq!(
            code("role", "postgres"),
            Some(codes::INSUFFICIENT_PRIVILEGE)
        );
        assert_eq!(code("application_name", "x"), None);
    }
}
