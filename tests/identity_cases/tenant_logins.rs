//! Logins whose credential names the tenant: client certificates (`auth: cert`, the tenant
//! taken from the SAN URI or the CN) and JWTs as passwords (`jwt:`, tenant and role from
//! the claims). Both run against the same database of tenants A, B and a suspended one
//! (`tenant_db`), check what a login sees with `WHO`, and refuse with 28000/28P01
//! naming the reason.

use super::{
    app, check, config, jwt_dir, jwt_yaml, psql, psql_ok, refused, tenant_yaml, tls_client,
    tls_yaml, Dir, Wire, ACTOR, CERT_USER, JWT_SECRET, KEY, SPIFFE, SUSPENDED, TENANT_A, TENANT_B,
};
use crate::common::{PgServer, ProxyProcess, USERS_YAML};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Migrations, the signing key, tenants A and B (two rows each in base_entity) and a
/// suspended tenant.
fn tenant_db() -> PgServer {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    pg.psql(
        "launch",
        &format!(
            "SELECT launch.set_signing_key('{KEY}');
             INSERT INTO tenants (id, name, domain, status, created_by, updated_by) VALUES
                 ('{TENANT_A}', 'A', 'a.example', 'active', '{ACTOR}', '{ACTOR}'),
                 ('{TENANT_B}', 'B', 'b.example', 'active', '{ACTOR}', '{ACTOR}'),
                 ('{SUSPENDED}', 'S', 's.example', 'suspended', '{ACTOR}', '{ACTOR}');
             INSERT INTO base_entity (tenant_id, created_by, updated_by)
                 SELECT id, '{ACTOR}', '{ACTOR}' FROM tenants, generate_series(1, 2)
                 WHERE status = 'active';"
        ),
    );
    pg
}

// ------------------------------------------------------------------ tokens

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass the test's `jwt:` settings.
fn claims(tenant: &str, role: &str) -> Value {
    json!({"iss": "https://idp.test", "aud": "launch-proxy", "sub": "user-1",
           "tenant_id": tenant, "role": role, "iat": now() - 5, "exp": now() + 600})
}

fn hs256(secret: &str, claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

// ================================================================== client certificates

/// CAs `ca` and `rogue`, the proxy certificate and client certificates: `a`, `b`, `s`
/// (SAN URI of tenant A, B, the suspended one), `bad` (URI not a ULID), `cn` (CN
/// `tenant-<A>`, no SAN), `rogue_a` (tenant A signed by the rogue CA).
fn cert_fixtures() -> Dir {
    let d = Dir::new();
    d.ca("ca");
    d.ca("rogue");
    d.server("srv", "ca");
    let uri = |t: &str| format!("URI:{SPIFFE}{t}");
    d.leaf("a", "ca", "client-a", &uri(TENANT_A), true);
    d.leaf("b", "ca", "client-b", &uri(TENANT_B), true);
    d.leaf("s", "ca", "client-s", &uri(SUSPENDED), true);
    d.leaf("bad", "ca", "client-bad", &uri("not-a-ulid"), true);
    d.leaf("cn", "ca", &format!("tenant-{TENANT_A}"), "", true);
    d.leaf("rogue_a", "rogue", "client-a", &uri(TENANT_A), true);
    d
}

const SAN_RULE: &str = "{ from: san_uri, prefix: \"spiffe://launch/tenant/\" }";

fn cert_proxy(pg: &PgServer, d: &Dir, rule: &str) -> ProxyProcess {
    let ca = d.s("ca.pem");
    let more = format!("  client_ca_file: \"{ca}\"\n  client_cert_tenant: {rule}\n");
    let extra = format!("{}{}", tls_yaml(d, "srv", &more), tenant_yaml());
    let pinned =
        format!("  pinned: {{ auth: cert, role: write, server_user: app, tenant: {TENANT_A} }}");
    let users = format!("{USERS_YAML}{CERT_USER}{pinned}\n");
    ProxyProcess::start(&config(pg, "", "", &extra), &users)
}

/// psql conninfo for `user` with client certificate `name`.
fn with_cert(d: &Dir, name: &str, user: &str) -> String {
    let (cert, key) = (d.s(&format!("{name}.pem")), d.s(&format!("{name}.key")));
    format!("user={user} {} sslcert={cert} sslkey={key}", d.verify("ca"))
}

/// `app.tenant_id|launch.current_tenant()|visible base_entity rows|their tenants`.
const WHO: &str = "SELECT concat_ws('|', current_setting('app.tenant_id'), \
     coalesce(launch.current_tenant()::text, 'NULL'), (SELECT count(*) FROM base_entity), \
     (SELECT string_agg(DISTINCT tenant_id::text, ',') FROM base_entity))";

fn who(tenant: &str) -> String {
    format!("{tenant}|{tenant}|2|{tenant}")
}

#[test]
fn client_certificate_names_the_tenant_by_san_uri_or_cn() {
    let (d, pg) = (cert_fixtures(), tenant_db());
    let proxy = cert_proxy(&pg, &d, SAN_RULE);
    for (cert, tenant) in [("a", TENANT_A), ("b", TENANT_B)] {
        let got = psql_ok(&proxy, &with_cert(&d, cert, "certuser"), "", WHO);
        assert_eq!(got, who(tenant), "cert {cert} sees only its tenant's rows");
    }
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM base_entity"), "4");
    let got = psql_ok(&proxy, &with_cert(&d, "a", "pinned"), "", WHO);
    assert_eq!(got, who(TENANT_A), "pinned user");

    let by_cn = cert_proxy(&pg, &d, "{ from: cn, prefix: \"tenant-\" }");
    let got = psql_ok(&by_cn, &with_cert(&d, "cn", "certuser"), "", WHO);
    assert_eq!(got, who(TENANT_A), "CN tenant-<ULID>");
    let tls = tls_client(&d.p("ca.pem"), Some((&d.p("a.pem"), &d.p("a.key"))));
    let err = refused(Wire::login(by_cn.port, Some(&tls), "certuser", ""));
    check(&err, "28000", "names no tenant");
}

#[test]
fn client_certificate_logins_are_refused_without_a_valid_tenant_certificate() {
    let (d, pg) = (cert_fixtures(), tenant_db());
    let proxy = cert_proxy(&pg, &d, SAN_RULE);
    let ca = d.p("ca.pem");
    let client = |name: &str| {
        let (pem, key) = (d.p(&format!("{name}.pem")), d.p(&format!("{name}.key")));
        Some(tls_client(&ca, Some((&pem, &key))))
    };
    #[rustfmt::skip]
    let cases = [
        ("TLS, no certificate", Some(tls_client(&ca, None)), "certuser", "authentication failed"),
        ("no TLS", None, "certuser", "sslcert"),
        ("URI not a ULID", client("bad"), "certuser", "not a ULID"),
        ("CN under a san_uri rule", client("cn"), "certuser", "names no tenant"),
        ("pinned to another tenant", client("b"), "pinned", "another tenant"),
        ("suspended tenant", client("s"), "certuser", "not active"),
    ];
    for (what, tls, user, needle) in cases {
        let err = refused(Wire::login(proxy.port, tls.as_ref(), user, ""));
        let ok = err.starts_with("28000: ") && err.contains(needle);
        assert!(ok, "{what}: {err}");
    }
    // A certificate from another CA fails the TLS handshake itself.
    let rogue = client("rogue_a");
    let err = refused(Wire::login(proxy.port, rogue.as_ref(), "certuser", ""));
    assert!(err.starts_with("io: "), "rogue CA: {err}");
    let conn = with_cert(&d, "rogue_a", "certuser");
    let err = psql(&proxy, &conn, "", &["SELECT 1"]).expect_err("rogue CA");
    assert!(err.contains("SSL") || err.contains("alert"), "{err}");
    // Password users are unaffected, and the proxy still serves certificate logins.
    assert_eq!(app(&proxy, "sslmode=require").unwrap(), "1");
    let got = psql_ok(&proxy, &with_cert(&d, "a", "certuser"), "", WHO);
    assert_eq!(got, who(TENANT_A));
}

// ================================================================== JWT

fn jwt_proxy(pg: &PgServer, d: &Dir, allow_loopback: bool) -> ProxyProcess {
    let extra = format!("{}{}", tls_yaml(d, "srv", ""), jwt_yaml(allow_loopback));
    ProxyProcess::start(&config(pg, "", "", &extra), USERS_YAML)
}

#[test]
fn jwt_over_tls_logs_in_with_the_claimed_tenant_and_role() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let proxy = jwt_proxy(&pg, &d, false);
    let conn = format!("user=alice {}", d.verify("ca"));
    let insert = format!(
        "INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}') \
         RETURNING tenant_id"
    );
    let read = hs256(JWT_SECRET, &claims(TENANT_A, "read"));
    assert_eq!(psql_ok(&proxy, &conn, &read, WHO), who(TENANT_A));
    let user = psql_ok(&proxy, &conn, &read, "SELECT current_user");
    assert_eq!(user, "app_ro");
    let err = psql(&proxy, &conn, &read, &[&insert]).expect_err("read role must not write");
    assert!(err.contains("permission denied"), "{err}");

    let write = hs256(JWT_SECRET, &claims(TENANT_B, "write"));
    assert_eq!(psql_ok(&proxy, &conn, &write, "SELECT current_user"), "app");
    let inserted = psql_ok(&proxy, &conn, &write, &insert);
    assert_eq!(inserted, format!("{TENANT_B}\nINSERT 0 1"));
    let rows = format!("SELECT count(*) FROM base_entity WHERE tenant_id = '{TENANT_B}'");
    assert_eq!(pg.psql("launch", &rows), "3");
}

#[test]
fn jwt_refusals_name_the_reason() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let proxy = jwt_proxy(&pg, &d, false);
    let tls = tls_client(&d.p("ca.pem"), None);
    let login = |token: &str| Wire::login(proxy.port, Some(&tls), "alice", token);
    let bad = |name: &str, v: Value| {
        let mut c = claims(TENANT_A, "write");
        c[name] = v;
        hs256(JWT_SECRET, &c)
    };
    let other_key = hs256(&JWT_SECRET.replace('i', "j"), &claims(TENANT_A, "read"));
    #[rustfmt::skip]
    let cases = [
        ("expired", bad("exp", json!(now() - 3600)), "28P01", "JWT has expired"),
        ("bad signature", other_key, "28P01", "signature does not verify"),
        ("tenant not a ULID", bad("tenant_id", json!("acme")), "28P01", "not a ULID"),
        ("wrong audience", bad("aud", json!("billing")), "28P01", "audience"),
        ("unknown role", bad("role", json!("admin")), "28P01", "\"role\""),
        ("not a token", "apppw".to_owned(), "28P01", "malformed JWT"),
        ("suspended tenant", hs256(JWT_SECRET, &claims(SUSPENDED, "read")), "28000", "not active"),
    ];
    for (what, token, code, needle) in cases {
        let err = refused(login(&token));
        check(&err, code, needle);
        let detail = code == "28000" || err.contains("token rejected");
        assert!(detail, "{what}: the detail must name the token: {err}");
    }
    // psql shows the reason too, and good tokens still work.
    let conn = format!("user=alice {}", d.verify("ca"));
    let expired = bad("exp", json!(now() - 3600));
    let err = psql(&proxy, &conn, &expired, &["SELECT 1"]).expect_err("expired");
    assert!(err.contains("token rejected: JWT has expired"), "{err}");
    let mut w = login(&hs256(JWT_SECRET, &claims(TENANT_A, "write"))).expect("good token");
    let tenant = w.query("SELECT current_setting('app.tenant_id')").unwrap();
    assert_eq!(tenant, [TENANT_A]);
}

#[test]
fn jwt_in_cleartext_needs_tls_unless_loopback_is_allowed() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let token = hs256(JWT_SECRET, &claims(TENANT_A, "write"));
    let strict = jwt_proxy(&pg, &d, false);
    let err = refused(Wire::login(strict.port, None, "alice", &token));
    check(&err, "28000", "\"alice\" must log in with a token over TLS");
    let err = psql(&strict, "user=alice sslmode=disable", &token, &["SELECT 1"]);
    let err = err.expect_err("plain token login");
    assert!(err.contains("must log in with a token over TLS"), "{err}");

    let lenient = jwt_proxy(&pg, &d, true);
    let mut w = Wire::login(lenient.port, None, "alice", &token).expect("plain on loopback");
    let tenant = w.query("SELECT current_setting('app.tenant_id')").unwrap();
    assert_eq!(tenant, [TENANT_A]);
    let sql = "SELECT launch.current_tenant()";
    let got = psql_ok(&lenient, "user=alice sslmode=disable", &token, sql);
    assert_eq!(got, TENANT_A);
}
