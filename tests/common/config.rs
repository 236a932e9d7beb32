//! Proxy configuration text for tests, mirroring config/launch-proxy.yaml.

use super::pg::PgServer;

/// The `pool:` section of the shipped config/launch-proxy.yaml, in order.
/// (tests/harness_smoke.rs checks that the shipped file still matches this table.)
pub const DEFAULT_POOL: &[(&str, &str)] = &[
    ("mode", "transaction"),
    ("max_client_conn", "2000"),
    ("default_pool_size", "100"),
    ("min_pool_size", "10"),
    ("reserve_pool_size", "50"),
    ("reserve_pool_timeout_ms", "5000"),
    ("max_db_connections", "100"),
    ("max_user_connections", "100"),
    ("acquire_timeout_ms", "5000"),
    ("connect_timeout_ms", "5000"),
    ("connect_retry_interval_ms", "200"),
    ("max_connecting", "2"),
    ("max_active", "8"),
    ("active_stall_ms", "20"),
    ("max_tenant_connections", "0"),
    ("pipeline_queued", "true"),
    ("max_tenant_clients", "0"),
    ("idle_timeout_ms", "60000"),
    ("server_max_uses", "7200"),
    ("server_lifetime_ms", "7200000"),
];

/// The `roles:` section of the shipped config.
const ROLES_YAML: &str = "\
roles:
  read:  { command_timeout_ms: 10000, statement_timeout_ms: 30000, idle_in_transaction_timeout_ms: 60000 }
  write: { command_timeout_ms: 30000, statement_timeout_ms: 60000, idle_in_transaction_timeout_ms: 60000 }
";

/// Users of the shipped config/users.yaml (the roles [`PgServer`] creates).
pub const USERS_YAML: &str = "\
users:
  app:    { password: \"apppw\", role: write }
  app_ro: { password: \"approp\", role: read }
";

/// The shipped configuration with the server pointed at `pg`. `pool_overrides` holds
/// YAML lines for the `pool:` section, written without indentation, e.g.
/// `"default_pool_size: 5\nacquire_timeout_ms: 500"`: a key that exists replaces the
/// default value, a new key is appended; indented lines continue the previous key.
/// `listen` / `metrics_listen` keep their defaults ([`super::ProxyProcess`] overrides
/// them on the command line).
pub fn proxy_config(pg: &PgServer, pool_overrides: &str) -> String {
    let mut pool: Vec<(String, String)> = DEFAULT_POOL
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut last: Option<usize> = None;
    for line in pool_overrides.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t', '-']) {
            let i = last.unwrap_or_else(|| {
                panic!("pool override continuation line without a key: {line:?}")
            });
            pool[i].1.push_str("\n    ");
            pool[i].1.push_str(line.trim_end());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("pool override is not `key: value`: {line:?}"));
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        let i = match pool.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                pool[i].1 = value;
                i
            }
            None => {
                pool.push((key, value));
                pool.len() - 1
            }
        };
        last = Some(i);
    }

    let mut yaml = String::new();
    yaml.push_str("listen: \"0.0.0.0:6432\"\n");
    yaml.push_str("metrics_listen: \"127.0.0.1:9127\"\n");
    yaml.push_str(&format!(
        "server: {{ host: 127.0.0.1, port: {}, database: launch }}\n",
        pg.port
    ));
    yaml.push_str("users_file: users.yaml\n");
    yaml.push_str("pool:\n");
    for (k, v) in &pool {
        if v.is_empty() || v.starts_with('\n') {
            yaml.push_str(&format!("  {k}:{v}\n"));
        } else {
            yaml.push_str(&format!("  {k}: {v}\n"));
        }
    }
    yaml.push_str(ROLES_YAML);
    yaml
}
