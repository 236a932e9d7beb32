//! Reading the config and users files and resolving secrets from files and environment.

use super::users::{ClientSecret, ServerLogin, User, UserEntry, UsersFile};
use super::{validate, Config, Settings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Overrides from the command line or environment, applied before validation.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub instance_listen: Option<String>,
    /// `cancel.host_id`: processes started from one config file (a rolling restart) differ
    /// in it.
    pub host_id: Option<u8>,
}

pub use Overrides as LoadOverrides;

/// Reads, overrides, validates. Errors name the file and the key at fault.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Settings, LoadError> {
    let mut config: Config = parse_yaml(path)?;
    if let Some(l) = &overrides.listen {
        config.listen = l.clone();
    }
    if let Some(m) = &overrides.metrics_listen {
        config.metrics_listen = m.clone();
    }
    if let Some(i) = &overrides.instance_listen {
        config.instance_listen = i.clone();
    }
    if let Some(h) = overrides.host_id {
        config.cancel.host_id = h;
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let users_path = base.join(&config.users_file);
    let users_file: UsersFile = parse_yaml(&users_path)?;
    let mut users = BTreeMap::new();
    for (name, entry) in users_file.users {
        let user = resolve_user(&name, entry, base).map_err(|m| {
            LoadError::Invalid(format!("{}: user \"{name}\": {m}", users_path.display()))
        })?;
        users.insert(name, Arc::new(user));
    }
    let signing_key = signing_key(&config.tenant, base)?;
    let mut settings = validate::validate(config, users, signing_key)?;
    settings.base_dir = base.to_owned();
    settings.source = path.to_owned();
    settings.overrides = overrides.clone();
    if let Some(tls) = &settings.config.tls {
        crate::net::tls::ClientTls::load(tls, base)
            .map_err(|e| LoadError::Invalid(format!("tls: {e}")))?;
    }
    crate::net::tls::server_tls(
        &settings.config.server.tls,
        &settings.config.server.host,
        base,
    )
    .map_err(|e| LoadError::Invalid(format!("server.tls: {e}")))?;
    Ok(settings)
}

/// The key that signs tenant ids: at least 32 bytes, given as hex.
fn signing_key(t: &super::TenantConfig, base: &Path) -> Result<Option<Vec<u8>>, LoadError> {
    let hex = secret(
        "signing_key",
        t.signing_key.clone(),
        t.signing_key_file.clone(),
        t.signing_key_env.clone(),
        base,
    )
    .map_err(|m| LoadError::Invalid(format!("tenant.{m}")))?;
    let Some(hex) = hex else { return Ok(None) };
    let hex = hex.trim();
    let bytes = decode_hex(hex).ok_or_else(|| {
        LoadError::Invalid("tenant.signing_key must be hex (e.g. `openssl rand -hex 32`)".into())
    })?;
    if bytes.len() < 32 {
        return Err(LoadError::Invalid(format!(
            "tenant.signing_key is {} bytes; at least 32 are required",
            bytes.len()
        )));
    }
    Ok(Some(bytes))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|e| LoadError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Resolves exactly one of a literal, a file and an environment variable.
fn secret(
    what: &str,
    literal: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    base: &Path,
) -> Result<Option<String>, String> {
    match (literal, file, env) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(s)),
        (None, Some(f), None) => {
            let p = base.join(f);
            let s = std::fs::read_to_string(&p)
                .map_err(|e| format!("{what}_file {}: {e}", p.display()))?;
            // Files written by `echo` end with a newline that is not part of the secret.
            Ok(Some(s.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None, Some(v)) => std::env::var(&v)
            .map(Some)
            .map_err(|_| format!("{what}_env: environment variable {v} is not set")),
        _ => Err(format!(
            "give only one of {what}, {what}_file and {what}_env"
        )),
    }
}

fn resolve_user(name: &str, e: UserEntry, base: &Path) -> Result<User, String> {
    let raw = match secret(
        "password",
        e.password,
        e.password_file,
        e.password_env,
        base,
    )? {
        Some(p) => p,
        // Certificate users prove themselves with TLS; their server login is another entry's.
        None if e.auth == super::ClientAuth::Cert => {
            if e.server_user.is_none() && e.server_password.is_none() {
                return Err(
                    "auth: cert needs server_user (or server_password) to log in to PostgreSQL"
                        .into(),
                );
            }
            String::new()
        }
        None => return Err("needs one of password, password_file or password_env".into()),
    };
    if crate::auth::scram::ScramVerifier::is_verifier(&raw) {
        crate::auth::scram::ScramVerifier::parse(&raw)
            .map_err(|err| format!("password looks like a SCRAM verifier but is invalid: {err}"))?;
    }
    let secret_value = ClientSecret::parse(raw);
    let server_password = secret(
        "server_password",
        e.server_password,
        e.server_password_file,
        e.server_password_env,
        base,
    )?;
    let server_login = match (server_password, &secret_value) {
        (Some(p), _) => ServerLogin::Password(p),
        (None, ClientSecret::Plain(p)) => ServerLogin::Password(p.clone()),
        (None, ClientSecret::Scram(_)) => ServerLogin::ScramPassthrough,
        (None, ClientSecret::Md5(_)) => {
            return Err(
                "an md5 hash cannot log in to PostgreSQL with SCRAM: add server_password".into(),
            )
        }
    };
    if e.auth == super::ClientAuth::Md5 && matches!(secret_value, ClientSecret::Scram(_)) {
        return Err("auth: md5 needs a plain password or an md5 hash, not a SCRAM verifier".into());
    }
    if e.auth == super::ClientAuth::Md5 && matches!(server_login, ServerLogin::ScramPassthrough) {
        return Err("auth: md5 cannot pass SCRAM keys through: add server_password".into());
    }
    if matches!(secret_value, ClientSecret::Md5(_)) && e.auth != super::ClientAuth::Md5 {
        return Err(
            "an md5 hash can only check md5 logins: set auth: md5 or give a SCRAM verifier".into(),
        );
    }
    let scram_verifier = match &secret_value {
        ClientSecret::Scram(v) => Some(v.clone()),
        ClientSecret::Plain(p) if e.auth == super::ClientAuth::ScramSha256 => {
            Some(crate::auth::scram::ScramVerifier::from_password(
                p,
                None,
                crate::auth::scram::DEFAULT_ITERATIONS,
            ))
        }
        _ => None,
    };
    let tenant = e
        .tenant
        .as_deref()
        .map(crate::tenant::TenantId::parse)
        .transpose()
        .map_err(|err| format!("tenant: {err}"))?;
    Ok(User {
        tenant,
        server_user: e.server_user.unwrap_or_else(|| name.to_owned()),
        scram_verifier,
        name: name.to_owned(),
        role: e.role,
        auth: e.auth,
        secret: secret_value,
        server_login,
    })
}
