//! TEMPORARY STUB replaced by the real tenant module on merge.
pub mod id {
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub struct TenantId([u8; 26]);
    #[derive(Debug, thiserror::Error)]
    #[error("tenant id must be a 26-character ULID")]
    pub struct TenantIdError;
    impl TenantId {
        pub fn parse(s: &str) -> Result<TenantId, TenantIdError> {
            let b: [u8; 26] = s.as_bytes().try_into().map_err(|_| TenantIdError)?;
            Ok(TenantId(b))
        }
        pub fn as_str(&self) -> &str {
            std::str::from_utf8(&self.0).unwrap_or("")
        }
    }
    impl std::fmt::Display for TenantId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }
}
pub mod guard {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct GuardViolation {
        pub what: &'static str,
    }
    impl GuardViolation {
        pub fn message(&self) -> String {
            format!(
                "permission denied to change \"app.tenant_id\" ({})",
                self.what
            )
        }
    }
    pub fn needs_check(_sql: &[u8]) -> bool {
        false
    }
    pub fn check(_sql: &[u8], _protected: &[&str]) -> Result<(), GuardViolation> {
        Ok(())
    }
}
pub mod prelude;
pub use id::{TenantId, TenantIdError};
pub const TENANT_SETTING: &str = "app.tenant_id";
pub const SIGNATURE_SETTING: &str = "app.tenant_sig";
pub const PROTECTED_SETTINGS: &[&str] = &[TENANT_SETTING, SIGNATURE_SETTING];
