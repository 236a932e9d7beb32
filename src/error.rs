//! The errors a client can be told about, each with its SQLSTATE and a client-safe message.
//!
//! Modules keep their own error enums; at the edge (the client task) they become a
//! [`ClientError`], which is what gets encoded as an ErrorResponse and counted by kind.

use crate::protocol::codes;
use crate::protocol::encode::{self, Severity};
use bytes::BytesMut;

/// What went wrong, as a stable label for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client broke the protocol.
    Protocol,
    /// Authentication failed or was refused.
    Auth,
    /// A configured limit refused the request.
    Limit,
    /// A proxy-enforced timeout fired.
    Timeout,
    /// PostgreSQL could not be reached or went away.
    Server,
    /// The proxy is shutting down.
    Shutdown,
    /// The client cancelled its statement (a CancelRequest).
    Cancel,
    /// An operator ended the session (the admin console's KILL_CLIENT, KILL_TENANT).
    Admin,
    /// A bug or an unexpected condition in the proxy.
    Internal,
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::Limit => "limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Server => "server",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Cancel => "cancel",
            ErrorKind::Admin => "admin",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error to report to the client before (usually) closing its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ErrorKind,
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ClientError {
    pub fn fatal(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ClientError {
            severity: Severity::Error,
            ..Self::fatal(kind, code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::fatal(ErrorKind::Protocol, codes::PROTOCOL_VIOLATION, message)
    }

    /// PostgreSQL's wording for a failed password check; used for unknown users too so
    /// that a client cannot probe which user names exist.
    pub fn password_failed(user: &str) -> Self {
        Self::fatal(
            ErrorKind::Auth,
            codes::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    }

    pub fn shutting_down() -> Self {
        Self::fatal(
            ErrorKind::Shutdown,
            codes::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        )
        .with_detail("launch-proxy is shutting down")
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        encode::error_response(
            buf,
            self.severity,
            self.code,
            &self.message,
            self.detail.as_deref(),
            self.hint.as_deref(),
        );
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.kind.label(), self.message)
    }
}

impl std::error::Error for ClientError {}
