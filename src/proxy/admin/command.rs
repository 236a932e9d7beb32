//! The admin console's command language: PgBouncer's words, one command per statement,
//! case-insensitive, an optional pool or database name after PAUSE and RESUME.

use crate::error::{ClientError, ErrorKind};
use crate::protocol::codes;
use crate::tenant::TenantId;

/// What SHOW can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Help,
    Version,
    Pools,
    Stats,
    Clients,
    Servers,
    Tenants,
    Databases,
    Users,
    Config,
    Lists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    /// Every pool, or the one named (by the pool's server login, or the database's name
    /// for all of them).
    Pause(Option<String>),
    Resume(Option<String>),
    Reload,
    Shutdown,
    /// Every pool, or the one named: server connections close once no transaction uses them.
    Reconnect(Option<String>),
    /// Ends one client's session, by the pid of its cancel key (SHOW CLIENTS).
    KillClient(u32),
    /// Ends every session of one tenant.
    KillTenant(TenantId),
}

impl Command {
    /// Whether a user allowed only to look (`admin.stats_users`) may run it.
    pub fn only_reads(&self) -> bool {
        matches!(self, Command::Show(_))
    }

    /// Whether a tenant's console (`admin.tenant_users` of `tenant`) may run it: what shows
    /// or ends that tenant's own sessions, nothing about the pools or other tenants.
    pub fn open_to_tenant(&self, tenant: &TenantId) -> bool {
        match self {
            Command::Show(what) => matches!(
                what,
                Show::Help | Show::Version | Show::Clients | Show::Tenants
            ),
            Command::KillClient(_) => true,
            Command::KillTenant(t) => t == tenant,
            _ => false,
        }
    }

    /// The CommandComplete tag.
    pub fn tag(&self) -> &'static str {
        match self {
            Command::Show(_) => "SHOW",
            Command::Pause(_) => "PAUSE",
            Command::Resume(_) => "RESUME",
            Command::Reload => "RELOAD",
            Command::Shutdown => "SHUTDOWN",
            Command::Reconnect(_) => "RECONNECT",
            Command::KillClient(_) => "KILL_CLIENT",
            Command::KillTenant(_) => "KILL_TENANT",
        }
    }
}

/// The commands SHOW HELP lists, with what each does.
pub const HELP: &[(&str, &str)] = &[
    ("SHOW HELP", "this list"),
    ("SHOW VERSION", "the proxy's version"),
    ("SHOW POOLS", "clients and server connections of each pool"),
    ("SHOW STATS", "totals of each pool since start"),
    (
        "SHOW CLIENTS",
        "every logged-in client: login, tenant, state, address",
    ),
    (
        "SHOW SERVERS",
        "every open server connection: backend pid, state, the client on it",
    ),
    (
        "SHOW TENANTS",
        "each tenant's clients: on a server, queued, idle (busiest first)",
    ),
    (
        "SHOW DATABASES",
        "the database behind each pool, and its limits",
    ),
    ("SHOW USERS", "the users file as last loaded"),
    (
        "SHOW CONFIG",
        "the effective configuration (secrets left out)",
    ),
    ("SHOW LISTS", "how many of each thing the proxy holds"),
    (
        "PAUSE [pool]",
        "no transaction starts; waits until server connections close",
    ),
    ("RESUME [pool]", "ends a pause"),
    ("RELOAD", "reads the users file again (as SIGHUP)"),
    (
        "RECONNECT [pool]",
        "closes every server connection once no transaction uses it; new ones open",
    ),
    ("SHUTDOWN", "stops accepting and drains (as SIGTERM)"),
    (
        "KILL_CLIENT pid",
        "ends the session with that pid (SHOW CLIENTS); its transaction rolls back",
    ),
    (
        "KILL_TENANT tenant",
        "ends every session of the tenant (a ULID); their transactions roll back",
    ),
];

/// Parses one statement (without its `;`).
pub fn parse(statement: &str) -> Result<Command, ClientError> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let word = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    let name = |i: usize| words.get(i).map(|w| unquote(w).to_owned());
    let (command, used) = match word(0).as_deref() {
        Some("SHOW") => {
            let what = match word(1).as_deref() {
                Some("HELP") => Show::Help,
                Some("VERSION") => Show::Version,
                Some("POOLS") => Show::Pools,
                Some("STATS") => Show::Stats,
                Some("CLIENTS") => Show::Clients,
                Some("SERVERS") => Show::Servers,
                Some("TENANTS") => Show::Tenants,
                Some("DATABASES") => Show::Databases,
                Some("USERS") => Show::Users,
                Some("CONFIG") => Show::Config,
                Some("LISTS") => Show::Lists,
                _ => return Err(unknown(statement)),
            };
            (Command::Show(what), 2)
        }
        Some("PAUSE") => (Command::Pause(name(1)), 1 + usize::from(words.len() > 1)),
        Some("RESUME") => (Command::Resume(name(1)), 1 + usize::from(words.len() > 1)),
        Some("RELOAD") => (Command::Reload, 1),
        Some("RECONNECT") => (
            Command::Reconnect(name(1)),
            1 + usize::from(words.len() > 1),
        ),
        Some("SHUTDOWN") => (Command::Shutdown, 1),
        Some("KILL_CLIENT") => {
            let pid = name(1).and_then(|p| p.parse().ok());
            let pid = pid.ok_or_else(|| needs(statement, "a client's pid (SHOW CLIENTS)"))?;
            (Command::KillClient(pid), 2)
        }
        Some("KILL_TENANT") => {
            let tenant = name(1).and_then(|t| TenantId::parse(&t.replace('\'', "")).ok());
            let tenant = tenant.ok_or_else(|| needs(statement, "a tenant id (a ULID)"))?;
            (Command::KillTenant(tenant), 2)
        }
        _ => return Err(unknown(statement)),
    };
    if words.len() > used {
        return Err(unknown(statement));
    }
    Ok(command)
}

/// A name written as an identifier may be double-quoted.
fn unquote(word: &str) -> &str {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
}

fn needs(statement: &str, what: &str) -> ClientError {
    let command = statement.split_whitespace().next().unwrap_or_default();
    ClientError::error(
        ErrorKind::Protocol,
        codes::SYNTAX_ERROR,
        format!("{} needs {what}", command.to_ascii_uppercase()),
    )
}

fn unknown(statement: &str) -> ClientError {
    let shown: String = statement.chars().take(80).collect();
    ClientError::error(
        ErrorKind::Protocol,
        codes::SYNTAX_ERROR,
        format!("unknown admin console command: {shown}"),
    )
    .with_hint("SHOW HELP lists the commands")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbouncer_commands_in_any_case() {
        assert_eq!(parse("show pools").unwrap(), Command::Show(Show::Pools));
        assert_eq!(
            parse("  SHOW   Stats ").unwrap(),
            Command::Show(Show::Stats)
        );
        assert_eq!(parse("pause").unwrap(), Command::Pause(None));
        assert_eq!(
            parse("PAUSE \"app\"").unwrap(),
            Command::Pause(Some("app".into()))
        );
        assert_eq!(
            parse("resume launch").unwrap(),
            Command::Resume(Some("launch".into()))
        );
        assert_eq!(parse("reload").unwrap(), Command::Reload);
        assert_eq!(parse("RECONNECT").unwrap(), Command::Reconnect(None));
        assert_eq!(
            parse("reconnect app").unwrap(),
            Command::Reconnect(Some("app".into()))
        );
        assert!(parse("reload").unwrap().tag() == "RELOAD");
        assert!(parse("SHOW POOLS").unwrap().only_reads());
        assert!(!parse("SHUTDOWN").unwrap().only_reads());
        assert_eq!(parse("kill_client 42").unwrap(), Command::KillClient(42));
        let t: TenantId = "01JBXTENANT1000000000000T1".parse().unwrap();
        for written in [
            "KILL_TENANT 01JBXTENANT1000000000000T1",
            "kill_tenant '01JBXTENANT1000000000000T1'",
            "KILL_TENANT \"01JBXTENANT1000000000000T1\"",
        ] {
            assert_eq!(parse(written).unwrap(), Command::KillTenant(t), "{written}");
        }
        assert!(!parse("KILL_CLIENT 42").unwrap().only_reads());
        assert_eq!(parse("KILL_CLIENT 42").unwrap().tag(), "KILL_CLIENT");
    }

    #[test]
    fn refuses_anything_else_with_a_syntax_error() {
        for bad in [
            "SELECT 1",
            "SHOW",
            "SHOW SERVERZ",
            "SHOW POOLS extra",
            "PAUSE a b",
            "RELOAD now",
            "RECONNECT a b",
            "KILL_CLIENT",
            "KILL_CLIENT abc",
            "KILL_CLIENT 1 2",
            "KILL_TENANT",
            "KILL_TENANT not-a-ulid",
            "",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.code, codes::SYNTAX_ERROR, "{bad}");
        }
    }
}
