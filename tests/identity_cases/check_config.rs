//! `launch-proxy --check-config` on the identity settings: missing TLS files, `jwt:`
//! server users that are not in the users file or have the wrong role, tenant users and
//! `auth: cert` users without `tenant.signing_key` or a client CA. No server is started;
//! the config and users files are written into a certificate directory.

use super::{jwt_dir, jwt_yaml, tenant_yaml, tls_yaml, Dir, CERT_USER, TENANT_A};
use crate::common::USERS_YAML;
use std::process::Command;

// ================================================================== --check-config

/// Runs `--check-config` on `config` (with `users` beside it): (ok, stdout + stderr).
fn check_config(d: &Dir, config: &str, users: &str) -> (bool, String) {
    std::fs::write(d.p("launch-proxy.yaml"), config).unwrap();
    std::fs::write(d.p("users.yaml"), users).unwrap();
    let out = Command::new(crate::common::proxy_binary())
        .arg("--check-config")
        .arg(d.p("launch-proxy.yaml"))
        .output()
        .expect("run launch-proxy --check-config");
    let text = [out.stdout, out.stderr].concat();
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

const BASE: &str = "listen: \"127.0.0.1:6432\"\nmetrics_listen: \"\"\n\
     server: { host: 127.0.0.1, port: 5432, database: launch }\nusers_file: users.yaml\n";

fn assert_rejected(d: &Dir, config: &str, users: &str, needles: &[&str]) {
    let (ok, text) = check_config(d, config, users);
    assert!(!ok, "accepted:\n{config}\n{text}");
    for n in needles {
        assert!(text.contains(n), "want {n:?} in:\n{text}\nfor:\n{config}");
    }
}

/// `tls:` with a client CA, for the --check-config tests.
fn check_dir() -> (Dir, String) {
    let d = jwt_dir();
    let ca = format!("  client_ca_file: \"{}\"\n", d.s("ca.pem"));
    let tls = tls_yaml(&d, "srv", &ca);
    (d, tls)
}

#[test]
fn check_config_rejects_missing_tls_files_unknown_jwt_users_and_unsigned_tenants() {
    let (d, tls) = check_dir();
    let good = format!("{BASE}{tls}{}", jwt_yaml(false));
    let users = format!("{USERS_YAML}{CERT_USER}");
    let (ok, text) = check_config(&d, &good, &users);
    assert!(ok && text.contains("configuration OK"), "{text}");

    for file in ["srv.pem", "srv.key", "ca.pem"] {
        let missing = d.s(&format!("missing-{file}"));
        let config = good.replace(&d.s(file), &missing);
        assert_rejected(&d, &config, &users, &["tls", &missing, "No such file"]);
    }
    let server_tls =
        |tls: &str| good.replace(" }\nusers_file", &format!(", tls: {tls} }}\nusers_file"));
    let no_ca = server_tls("{ mode: verify-full }");
    assert_rejected(&d, &no_ca, &users, &["server.tls", "needs ca_file"]);
    let missing = d.s("missing.pem");
    let gone_ca = server_tls(&format!("{{ mode: verify-full, ca_file: \"{missing}\" }}"));
    assert_rejected(&d, &gone_ca, &users, &["server.tls", &missing]);

    let ghost = good.replace("read: app_ro", "read: ghost");
    let msg = "jwt.server_users.read: \"ghost\" is not in the users file";
    assert_rejected(&d, &ghost, &users, &[msg]);
    let wrong_role = good.replace("write: app }", "write: app_ro }");
    let msg = ["jwt.server_users.write", "must be a write user"];
    assert_rejected(&d, &wrong_role, &users, &msg);
    let unsigned_jwt = good.replace(&tenant_yaml(), "");
    assert_rejected(&d, &unsigned_jwt, &users, &["jwt needs tenant.signing_key"]);

    let t1 = format!("  t1: {{ password: pw, role: write, server_user: app, tenant: {TENANT_A} }}");
    let tenant_user = format!("{USERS_YAML}{t1}\n");
    let plain = format!("{BASE}{tls}");
    let (ok, text) = check_config(&d, &format!("{plain}{}", tenant_yaml()), &tenant_user);
    assert!(ok, "a tenant user with a signing key is fine: {text}");
    let msg = "users with a tenant need tenant.signing_key";
    assert_rejected(&d, &plain, &tenant_user, &[msg]);
    let short = format!("{plain}tenant: {{ signing_key: \"abcd\" }}\n");
    assert_rejected(&d, &short, &tenant_user, &["tenant.signing_key is 2 bytes"]);
}

/// `auth: cert` users always run as a tenant (named by their certificate): --check-config
/// refuses them without `tenant.signing_key` (every certificate login would run unsigned
/// and see no rows) and without `tls.client_ca_file` or `tls:` (every certificate login
/// would be refused).
#[test]
fn check_config_rejects_cert_users_without_signing_key_or_client_ca() {
    let (d, tls) = check_dir();
    let users = format!("{USERS_YAML}{CERT_USER}");
    let (ok, text) = check_config(&d, &format!("{BASE}{tls}{}", tenant_yaml()), &users);
    assert!(ok, "{text}");
    let no_ca = tls_yaml(&d, "srv", "");
    let tenant = tenant_yaml();
    let cases = [
        ("no tenant.signing_key", format!("{BASE}{tls}")),
        ("no tls.client_ca_file", format!("{BASE}{no_ca}{tenant}")),
        ("no tls", format!("{BASE}{tenant}")),
    ];
    let accepted: Vec<&str> = cases
        .iter()
        .filter(|(_, config)| check_config(&d, config, &users).0)
        .map(|(what, _)| *what)
        .collect();
    let what = "--check-config accepts an auth: cert user with";
    assert!(accepted.is_empty(), "{what} {accepted:?}");
}
