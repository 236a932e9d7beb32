//! Each test's PostgreSQL and proxy, its users and tenants, and the helpers that log in,
//! query and compare a client's view with the superuser's.

use super::*;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("OS randomness");
    hex(&b)
}

/// What the proxy sends as `app.tenant_sig`: hex HMAC-SHA256(key, tenant).
pub fn sign(key_hex: &str, tenant: &str) -> String {
    let byte = |i: usize| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap();
    let key: Vec<u8> = (0..key_hex.len() / 2).map(byte).collect();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(tenant.as_bytes());
    hex(&mac.finalize().into_bytes())
}

pub fn pw(user: &str) -> String {
    match user {
        "app" => "apppw".into(),
        "app_ro" => "approp".into(),
        u => format!("{u}pw"),
    }
}

pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

pub fn user_line(user: &str, tenant: &str, role: &str, server: &str, extra: &str) -> String {
    format!(
        "  {user}: {{ password: \"{user}pw\", role: {role}, tenant: \"{tenant}\", \
         server_user: {server}{extra} }}\n"
    )
}

pub fn users_yaml(extra: &str) -> String {
    let mut y = String::from("users:\n  app: { password: \"apppw\", role: write }\n");
    y += "  app_ro: { password: \"approp\", role: read }\n";
    for (user, t, role, server, auth) in [
        ("t1", T1, "write", "app", ""),
        ("t2", T2, "write", "app", ""),
        ("t3", T3, "write", "app", ""),
        ("t1ro", T1, "read", "app_ro", ""),
        ("t1m", T1, "write", "app", ", auth: md5"),
        ("t2m", T2, "write", "app", ", auth: md5"),
    ] {
        y += &user_line(user, t, role, server, auth);
    }
    y + extra
}

/// Tenants with SEED rows in base_entity and audit_log each, written by the superuser.
pub fn seed_sql(tenants: &[String]) -> String {
    format!(
        "INSERT INTO tenants (id, name, created_by, updated_by)
             SELECT t, 'tenant ' || t, '{ACTOR}', '{ACTOR}' FROM unnest('{{{}}}'::text[]) t;
         INSERT INTO base_entity (tenant_id, created_by, updated_by)
             SELECT id, '{ACTOR}', '{ACTOR}' FROM tenants, generate_series(1, {SEED});
         INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by)
             SELECT tenant_id, id, 'base_entity', 'create', '{ACTOR}' FROM base_entity;",
        tenants.join(",")
    )
}

pub struct Env {
    pub _pg: PgServer,
    pub proxy: ProxyProcess,
    pub su: Client,
    pub key: String,
}

/// Notifications a client received, as `channel:payload`.
pub type Notes = Arc<Mutex<Vec<String>>>;

/// A last change to the config text.
pub type Edit = fn(String) -> String;

impl Env {
    /// `tenant`: extra keys of the `tenant:` block; `users`: extra users; `ids`: tenants.
    pub async fn start(pool: &str, tenant: &str, users: &str, ids: &[String], edit: Edit) -> Env {
        let (pg, proxy, key) = blocking(|| {
            let pg = PgServer::start();
            pg.apply_migrations("launch");
            let key = random_hex(32);
            pg.psql("launch", &format!("SELECT launch.set_signing_key('{key}')"));
            let problems = pg.psql("launch", "SELECT count(*) FROM launch.check_app_roles()");
            assert_eq!(problems, "0", "launch.check_app_roles() reports problems");
            pg.psql("launch", &seed_sql(ids));
            let t = format!("tenant: {{ signing_key: \"{key}\"{tenant} }}\n");
            let cfg = edit(proxy_config(&pg, pool) + &t);
            (pg, ProxyProcess::start(&cfg, &users_yaml(users)), key)
        });
        let su = pg.superuser("launch").await;
        let _pg = pg;
        Env {
            _pg,
            proxy,
            su,
            key,
        }
    }

    /// Another superuser connection, for holding locks while `su` goes on.
    pub async fn superuser(&self) -> Client {
        self._pg.superuser("launch").await
    }

    pub async fn new(pool: &str) -> Env {
        Env::start(pool, "", "", &[T1, T2, T3].map(String::from), |c| c).await
    }

    /// A client whose notifications are collected.
    pub async fn try_login(&self, user: &str) -> Result<(Client, Notes), Error> {
        let conn = self.proxy.conn_string(user, &pw(user));
        let (client, mut connection) = tokio_postgres::connect(&conn, NoTls).await?;
        let notes = Notes::default();
        let n = notes.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notification(x) = m {
                    let note = format!("{}:{}", x.channel(), x.payload());
                    n.lock().unwrap().push(note);
                }
            }
        });
        Ok((client, notes))
    }

    pub async fn login(&self, user: &str) -> Client {
        let (c, _) = self.try_login(user).await.expect(user);
        c
    }

    /// The superuser's answer (first column of the first row).
    pub async fn su1(&self, sql: &str) -> String {
        let rows = col(&self.su, sql).await;
        rows.into_iter().next().unwrap_or_default()
    }

    /// Every row of every tenant table as the superuser sees it, as a digest.
    pub async fn all_rows(&self) -> String {
        let sql = "SELECT count(*) || ':' || md5(string_agg(x, '|' ORDER BY x)) FROM (
                       SELECT b::text x FROM base_entity b UNION ALL
                       SELECT a::text FROM audit_log a UNION ALL SELECT t::text FROM tenants t) s";
        self.su1(sql).await
    }

    /// What is wrong with `c`'s view of the tenant tables: rows of another tenant, or not
    /// exactly tenant `t`'s own (the superuser's count; `t` empty: none at all).
    pub async fn view_problems(&self, c: &Client, t: &str, who: &str) -> Vec<String> {
        let sql = "SELECT tenant_id FROM base_entity UNION ALL SELECT tenant_id FROM audit_log \
                   UNION ALL SELECT id FROM tenants";
        let seen = match run(c, sql).await {
            Ok(seen) => seen,
            Err(e) => return vec![format!("{who}: reading the tenant tables: {e}")],
        };
        let own = format!("SELECT count(*) FROM ({sql}) s WHERE tenant_id = '{t}'");
        let own = self.su1(&own).await;
        let foreign: Vec<_> = seen.iter().filter(|s| *s != t).collect();
        let mut problems = Vec::new();
        if !foreign.is_empty() {
            problems.push(format!("{who}: LEAK: rows of other tenants: {foreign:?}"));
        }
        if seen.len().to_string() != own {
            let n = seen.len();
            problems.push(format!("{who}: sees {n} rows, its tenant has {own}"));
        }
        problems
    }

    /// `c` sees exactly tenant `t`'s rows: none of another tenant, all of its own.
    pub async fn check_own(&self, c: &Client, t: &str, who: &str) {
        let problems = self.view_problems(c, t, who).await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// `SQLSTATE message` of an error.
pub fn show(e: &Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => format!("(no server error) {e}"),
    }
}

/// Simple Query: the first column of every row (NULL as ""), or `SQLSTATE message`.
pub async fn run(c: &Client, sql: &str) -> Result<Vec<String>, String> {
    let r = tokio::time::timeout(LIMIT, c.simple_query(sql)).await;
    let msgs = r.unwrap_or_else(|_| panic!("{sql:?} hangs"));
    let first = |m: Msg| match m {
        Msg::Row(r) => Some(r.get(0).unwrap_or_default().to_owned()),
        _ => None,
    };
    let msgs = msgs.map_err(|e| show(&e))?;
    Ok(msgs.into_iter().filter_map(first).collect())
}

pub async fn col(c: &Client, sql: &str) -> Vec<String> {
    run(c, sql).await.unwrap_or_else(|e| panic!("{sql:?}: {e}"))
}

/// The `SQLSTATE message` of a query that must fail.
pub async fn fails(c: &Client, sql: &str) -> String {
    run(c, sql).await.expect_err(sql)
}

/// Extended-protocol rows: the first column as text, or `SQLSTATE message`.
pub fn texts(rows: Result<Vec<Row>, Error>) -> Result<Vec<String>, String> {
    let cell = |r: &Row| r.try_get::<_, Option<String>>(0).ok().flatten();
    let rows = rows.map_err(|e| show(&e))?;
    Ok(rows.iter().map(|r| cell(r).unwrap_or_default()).collect())
}

/// Gives the application role the session-level advisory lock functions back, as a DBA
/// may (migrations/0005 revokes them); server connections opened afterwards release such
/// locks on every tenant switch.
pub async fn grant_session_locks(env: &Env) {
    let grant = "GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint), \
                 pg_advisory_lock_shared(bigint), pg_try_advisory_lock(bigint) TO app";
    col(&env.su, grant).await;
}
