//! Tenant-isolation attack suite: a client of one tenant tries, through the proxy, to read or
//! write another tenant's rows (docs/tenancy.md). Each test has its own PostgreSQL (migrations,
//! a random signing key, tenants T1..T3 with rows) and proxy; after an attempt the attacker's
//! view is compared with the superuser's count of its own rows, and the other tenants' rows
//! with their state before. `PROXY BUG` tests reproduce isolation failures of the proxy as it
//! is: they fail until it is fixed.

mod common;

use common::{proxy_config, psql_bin, PgServer, ProxyProcess};
use hmac::{KeyInit, Mac};
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{AsyncMessage, Client, Error, NoTls, Row, SimpleQueryMessage as Msg};

const T1: &str = "01JBXTENANT1000000000000T1";
const T2: &str = "01JBXTENANT2000000000000T2";
const T3: &str = "01JBXTENANT3000000000000T3";
const ACTOR: &str = "01JBXACT0R00000000000000C1";
/// Rows per tenant in base_entity and in audit_log.
const SEED: usize = 3;
const LIMIT: Duration = Duration::from_secs(30);
/// One server connection: consecutive transactions of different tenants share it.
const SOLO: &str = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                    max_db_connections: 1";
/// A DO block reports what it sees: `seen <base_entity> <audit_log> <current_tenant>`.
const SEEN: &str = "RAISE EXCEPTION 'seen % % %', (SELECT count(*) FROM base_entity), \
                    (SELECT count(*) FROM audit_log), coalesce(launch.current_tenant(), '-');";
const NOTHING: &str = "P0001 seen 0 0 -";
/// The statement guard's refusal.
const GUARD: &str = "42501 permission denied to change \"app.tenant_id\": launch-proxy";

// ------------------------------------------------------------------------------ helpers

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("OS randomness");
    hex(&b)
}

/// What the proxy sends as `app.tenant_sig`: hex HMAC-SHA256(key, tenant).
fn sign(key_hex: &str, tenant: &str) -> String {
    let byte = |i: usize| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap();
    let key: Vec<u8> = (0..key_hex.len() / 2).map(byte).collect();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(tenant.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn pw(user: &str) -> String {
    match user {
        "app" => "apppw".into(),
        "app_ro" => "approp".into(),
        u => format!("{u}pw"),
    }
}

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

fn user_line(user: &str, tenant: &str, role: &str, server: &str, extra: &str) -> String {
    format!(
        "  {user}: {{ password: \"{user}pw\", role: {role}, tenant: \"{tenant}\", \
         server_user: {server}{extra} }}\n"
    )
}

fn users_yaml(extra: &str) -> String {
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
fn seed_sql(tenants: &[String]) -> String {
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

struct Env {
    _pg: PgServer,
    proxy: ProxyProcess,
    su: Client,
    key: String,
}

/// Notifications a client received, as `channel:payload`.
type Notes = Arc<Mutex<Vec<String>>>;

/// A last change to the config text.
type Edit = fn(String) -> String;

impl Env {
    /// `tenant`: extra keys of the `tenant:` block; `users`: extra users; `ids`: tenants.
    async fn start(pool: &str, tenant: &str, users: &str, ids: &[String], edit: Edit) -> Env {
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

    async fn new(pool: &str) -> Env {
        Env::start(pool, "", "", &[T1, T2, T3].map(String::from), |c| c).await
    }

    /// A client whose notifications are collected.
    async fn try_login(&self, user: &str) -> Result<(Client, Notes), Error> {
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

    async fn login(&self, user: &str) -> Client {
        let (c, _) = self.try_login(user).await.expect(user);
        c
    }

    /// The superuser's answer (first column of the first row).
    async fn su1(&self, sql: &str) -> String {
        let rows = col(&self.su, sql).await;
        rows.into_iter().next().unwrap_or_default()
    }

    /// Every row of every tenant table as the superuser sees it, as a digest.
    async fn all_rows(&self) -> String {
        let sql = "SELECT count(*) || ':' || md5(string_agg(x, '|' ORDER BY x)) FROM (
                       SELECT b::text x FROM base_entity b UNION ALL
                       SELECT a::text FROM audit_log a UNION ALL SELECT t::text FROM tenants t) s";
        self.su1(sql).await
    }

    /// What is wrong with `c`'s view of the tenant tables: rows of another tenant, or not
    /// exactly tenant `t`'s own (the superuser's count; `t` empty: none at all).
    async fn view_problems(&self, c: &Client, t: &str, who: &str) -> Vec<String> {
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
    async fn check_own(&self, c: &Client, t: &str, who: &str) {
        let problems = self.view_problems(c, t, who).await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// `SQLSTATE message` of an error.
fn show(e: &Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => format!("(no server error) {e}"),
    }
}

/// Simple Query: the first column of every row (NULL as ""), or `SQLSTATE message`.
async fn run(c: &Client, sql: &str) -> Result<Vec<String>, String> {
    let r = tokio::time::timeout(LIMIT, c.simple_query(sql)).await;
    let msgs = r.unwrap_or_else(|_| panic!("{sql:?} hangs"));
    let first = |m: Msg| match m {
        Msg::Row(r) => Some(r.get(0).unwrap_or_default().to_owned()),
        _ => None,
    };
    let msgs = msgs.map_err(|e| show(&e))?;
    Ok(msgs.into_iter().filter_map(first).collect())
}

async fn col(c: &Client, sql: &str) -> Vec<String> {
    run(c, sql).await.unwrap_or_else(|e| panic!("{sql:?}: {e}"))
}

/// The `SQLSTATE message` of a query that must fail.
async fn fails(c: &Client, sql: &str) -> String {
    run(c, sql).await.expect_err(sql)
}

/// Extended-protocol rows: the first column as text, or `SQLSTATE message`.
fn texts(rows: Result<Vec<Row>, Error>) -> Result<Vec<String>, String> {
    let cell = |r: &Row| r.try_get::<_, Option<String>>(0).ok().flatten();
    let rows = rows.map_err(|e| show(&e))?;
    Ok(rows.iter().map(|r| cell(r).unwrap_or_default()).collect())
}

// ------------------------------------------------------- raw protocol client (md5 users)

struct Wire {
    s: TcpStream,
    pid: u32,
    secret: u32,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), &[0]].concat()
}

/// `SQLSTATE message` of an ErrorResponse body.
fn error_fields(body: &[u8]) -> String {
    let field = |t: u8| {
        let f = body.split(|&b| b == 0).find(|f| f.first() == Some(&t));
        let text = |f: &[u8]| String::from_utf8_lossy(&f[1..]).into_owned();
        f.map_or(String::new(), text)
    };
    format!("{} {}", field(b'C'), field(b'M'))
}

impl Wire {
    fn login(port: u16, user: &str) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let (pid, secret) = (0, 0);
        let mut w = Wire { s, pid, secret };
        let parts = ["user", user, "database", "launch", ""].map(cstr).concat();
        let body = [&196608u32.to_be_bytes()[..], &parts].concat();
        let len = (body.len() as u32 + 4).to_be_bytes();
        w.s.write_all(&[&len[..], &body].concat()).unwrap();
        loop {
            match w.read() {
                (b'R', b) if be32(&b) == 5 => {
                    let stored = md5_stored_hash(user, &pw(user));
                    let answer = md5_client_response(&stored, b[4..8].try_into().unwrap());
                    w.send(b'p', &cstr(&answer));
                }
                (b'K', b) => (w.pid, w.secret) = (be32(&b), be32(&b[4..])),
                (b'Z', _) => return w,
                (b'E', b) => panic!("{user} login: {}", error_fields(&b)),
                _ => {}
            }
        }
    }

    fn send(&mut self, tag: u8, body: &[u8]) {
        let len = (body.len() as u32 + 4).to_be_bytes();
        let msg = [&[tag][..], &len, body].concat();
        self.s.write_all(&msg).unwrap();
    }

    fn read(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h).expect("read a message");
        let mut b = vec![0u8; be32(&h[1..]) as usize - 4];
        self.s.read_exact(&mut b).unwrap();
        (h[0], b)
    }

    /// Reads up to ReadyForQuery: the first column of every row, or the first error.
    fn results(&mut self) -> Result<Vec<String>, String> {
        let (mut rows, mut err) = (Vec::new(), None);
        loop {
            match self.read() {
                (b'D', b) => {
                    let n = be32(&b[2..]) as usize;
                    rows.push(String::from_utf8_lossy(&b[6..6 + n]).into_owned());
                }
                (b'E', b) => err = err.or(Some(error_fields(&b))),
                (b'Z', _) => return err.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    fn query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        self.send(b'Q', &cstr(sql));
        self.results()
    }
}

/// A CancelRequest for (pid, secret), sent on its own connection.
fn cancel(port: u16, pid: u32, secret: u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let msg = [16, 80877102, pid, secret].map(u32::to_be_bytes);
    s.write_all(&msg.concat()).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}

// ------------------------------------------------------ escape attempts, table-driven

/// One escape attempt per line: `name | protocol[@user] | expected | SQL`. Protocol: `S`
/// simple Query, `P` named statement (tokio-postgres prepare, then execute), `U` unnamed
/// statement (query_typed); the user is `t1` unless given (`app`/`app_ro`: no tenant; `t1ro`:
/// tenant 1 on the read role). Expected: `ok` and the rows' first column (T1 as `own`),
/// exactly; otherwise a prefix of `SQLSTATE message`: `GUARD` is the proxy's refusal,
/// `NOTHING` a DO block that saw no row and no tenant. In the SQL `<T2>` is the victim tenant,
/// `<SIG>` the attacker's own signature, `<FORGED>` T2 signed under a key of the attacker's
/// choosing, `<SEEN>` makes a DO block report what it sees, `\n`/`\t` a newline/tab. From
/// `do_` on, the attempts hide in code the guard cannot see, or go past it.
const CASES: &str = r#"
set | S | GUARD | SET app.tenant_id = '<T2>'
set_session | S | GUARD | SET SESSION app.tenant_id = '<T2>'
set_local_in_tx | S | GUARD | BEGIN; SET LOCAL app.tenant_id = '<T2>'; SELECT tenant_id FROM base_entity; COMMIT
set_sig_own | S | GUARD | SET app.tenant_sig = '<SIG>'
set_both_forged | S | GUARD | SET app.tenant_id = '<T2>'; SET app.tenant_sig = '<FORGED>'
set_default | S | GUARD | SET app.tenant_id TO DEFAULT
reset_id | S | GUARD | RESET app.tenant_id
reset_sig | S | GUARD | RESET app.tenant_sig
reset_all_reapplied | S | ok | RESET ALL
discard_all_reapplied | S | ok | DISCARD ALL
set_config | S | GUARD | SELECT set_config('app.tenant_id', '<T2>', false)
set_config_qualified | S | GUARD | SELECT pg_catalog.set_config('app.tenant_id', '<T2>', false)
set_config_quoted | S | GUARD | SELECT "set_config"('app.tenant_id', '<T2>', false)
set_config_computed_name | S | GUARD | SELECT set_config('app.' || 'tenant_id', '<T2>', false)
set_config_from_pg_settings | S | GUARD | SELECT set_config(name, '<T2>', false) FROM pg_settings WHERE name LIKE 'app.%'
set_config_named_args | S | GUARD | SELECT set_config(setting_name => 'app.tenant_id', new_value => '<T2>', is_local => false)
multi_3rd_set | S | GUARD | SELECT 1; SELECT count(*) FROM base_entity; SET app.tenant_id = '<T2>'; SELECT tenant_id FROM base_entity
multi_3rd_set_config | S | GUARD | SELECT 1; SELECT 2; SELECT set_config('app.tenant_id', '<T2>', false); SELECT tenant_id FROM base_entity
multi_3rd_reset_all_fails_closed | S | ok 1 2 | SELECT 1; SELECT 2; RESET ALL; SELECT tenant_id FROM base_entity
mixed_case | S | GUARD | sEt App.TeNaNt_Id = '<T2>'
quoted_parts | S | GUARD | SET "app"."tenant_id" = '<T2>'
quoted_dotted_name | S | GUARD | SET "app.tenant_id" = '<T2>'
comments_between | S | GUARD | SET /* a */ app /* b */ . -- c\n tenant_id = '<T2>'
unicode_escape | S | GUARD | SET U&"app".U&"tenant\005fid" = '<T2>'
unicode_uescape | S | GUARD | SET U&"app".U&"tenant!005fid" UESCAPE '!' = '<T2>'
update_pg_settings | S | GUARD | UPDATE pg_settings SET setting = '<T2>' WHERE name = 'app.tenant_id'
alter_role_set | S | GUARD | ALTER ROLE app SET app.tenant_id = '<T2>'
sql_prepare_set_config | S | GUARD | PREPARE p AS SELECT set_config('app.tenant_id', $1, false)
ext_prepare_set | P | GUARD | SET app.tenant_id = '<T2>'
ext_prepare_set_config | P | GUARD | SELECT set_config('app.tenant_id', '<T2>', false)
ext_unnamed_discard_all | U | ok | DISCARD ALL
ext_unnamed_reset_all | U | ok | RESET ALL
ext_unnamed_set_local | U | GUARD | SET LOCAL app.tenant_id = '<T2>'
ext_unnamed_set_config_sig | U | GUARD | SELECT set_config('app.tenant_sig', '<FORGED>', false)
do_set_config_local | S | NOTHING | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); <SEEN> END$$
do_own_sig_replayed | S | NOTHING | DO $$DECLARE s text := current_setting('app.tenant_sig'); BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); PERFORM set_config('app.tenant_sig', s, true); <SEEN> END$$
do_forged_sig | S | NOTHING | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); PERFORM set_config('app.tenant_sig', '<FORGED>', true); <SEEN> END$$
do_session_then_next_statement | S | NOTHING | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', false); END$$; DO $$BEGIN <SEEN> END$$
do_execute_set_local | S | NOTHING | DO $$BEGIN EXECUTE 'SET LOCAL app.tenant_id = ' || quote_literal('<T2>'); <SEEN> END$$
do_execute_reset_sig | S | NOTHING | DO $$BEGIN EXECUTE 'SET LOCAL app.tenant_sig = ''''' ; <SEEN> END$$
do_alter_role_set | S | 42501 permission denied to set parameter | DO $$BEGIN EXECUTE 'ALTER ROLE app SET app.tenant_id = ''<T2>'''; END$$
do_reset_all_then_read | S | NOTHING | DO $$BEGIN EXECUTE 'RESET ALL'; <SEEN> END$$
do_insert_other | S | 42501 new row violates row-level security | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>'); END$$
create_function | S | 42501 permission denied for schema public | CREATE FUNCTION public.f() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$SELECT set_config('app.tenant_id', '<T2>', false)$$
create_function_temp | S | 42501 | CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$SELECT '<T2>'$$
create_or_replace_current_tenant | S | 42501 | CREATE OR REPLACE FUNCTION launch.current_tenant() RETURNS text LANGUAGE sql AS $$SELECT '<T2>'$$
create_view | S | 42501 permission denied for schema public | CREATE VIEW v AS SELECT * FROM base_entity
create_temp_table | S | 42501 | CREATE TEMP TABLE t AS SELECT * FROM base_entity
cte_view | S | ok own own own | WITH v AS (SELECT * FROM base_entity) SELECT tenant_id FROM v
subquery_union | S | ok own own own | SELECT tenant_id FROM (SELECT * FROM base_entity UNION ALL SELECT * FROM base_entity WHERE tenant_id = '<T2>') s
join_audit | S | ok own own own | SELECT a.tenant_id FROM audit_log a LEFT JOIN base_entity b ON b.id = a.entity_id WHERE b.id IS NOT NULL OR a.tenant_id = '<T2>'
where_other | S | ok | SELECT tenant_id FROM base_entity WHERE tenant_id = '<T2>' UNION ALL SELECT tenant_id FROM audit_log WHERE tenant_id = '<T2>'
ext_prepared_select | P | ok own own own | SELECT tenant_id::text FROM base_entity
current_tenant | S | ok own | SELECT launch.current_tenant()
tenant_status_other | S | ok active | SELECT launch.tenant_status('<T2>')
check_app_roles | S | ok | SELECT problem FROM launch.check_app_roles()
read_key_table | S | 42501 permission denied for schema launch_private | SELECT * FROM launch_private.signing_keys
set_signing_key | S | 42501 permission denied for function set_signing_key | SELECT launch.set_signing_key('<KEY>')
list_prepared_statements | S | 42501 permission denied | SELECT name, statement FROM pg_prepared_statements
list_prepared_statement_fn | S | 42501 permission denied | SELECT name FROM pg_catalog.pg_prepared_statement()
sql_prepare | S | 0A000 SQL PREPARE and EXECUTE are not supported | PREPARE p AS SELECT tenant_id FROM base_entity
pg_stat_activity | S | 42501 | SELECT query FROM pg_stat_activity
set_role_owner | S | 42501 | SET ROLE launch_owner
row_security_off | S | 42501 query would be affected by row-level security | SET LOCAL row_security = off; SELECT tenant_id FROM base_entity
insert_other | S | 42501 new row violates row-level security | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T2>', '<A>', '<A>')
insert_audit_other | S | 42501 new row violates row-level security | INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by) VALUES ('<T2>', '<A>', 'x', 'x', '<A>')
move_own_rows_to_other | S | 42501 new row violates row-level security | UPDATE base_entity SET tenant_id = '<T2>'
update_other | S | ok | UPDATE base_entity SET is_active = false WHERE tenant_id = '<T2>' RETURNING tenant_id
delete_other | S | ok | DELETE FROM base_entity WHERE tenant_id <> '<T1>' RETURNING tenant_id
update_tenant_status | S | 42501 | UPDATE tenants SET status = 'suspended' WHERE id = '<T2>'
truncate | S | 42501 | TRUNCATE base_entity
disable_rls | S | 42501 | ALTER TABLE base_entity DISABLE ROW LEVEL SECURITY
tenantless_app_reads | S@app | ok 0 0 0 - | SELECT (SELECT count(*) FROM base_entity) || ' ' || (SELECT count(*) FROM audit_log) || ' ' || (SELECT count(*) FROM tenants) || ' ' || coalesce(launch.current_tenant(), '-')
tenantless_app_insert | S@app | 42501 new row violates row-level security | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T1>', '<A>', '<A>')
tenantless_app_set | S@app | GUARD | SET app.tenant_id = '<T1>'
tenantless_app_do_set | S@app | NOTHING | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T1>', true); <SEEN> END$$
tenantless_app_ro_reads | S@app_ro | ok 0 0 0 - | SELECT (SELECT count(*) FROM base_entity) || ' ' || (SELECT count(*) FROM audit_log) || ' ' || (SELECT count(*) FROM tenants) || ' ' || coalesce(launch.current_tenant(), '-')
tenantless_app_ro_insert | S@app_ro | 42501 permission denied for table base_entity | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T1>', '<A>', '<A>')
read_role_tenant_reads | P@t1ro | ok own own own | SELECT tenant_id::text FROM base_entity
read_role_tenant_insert_own | S@t1ro | 42501 permission denied for table base_entity | INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>')
read_role_tenant_update | S@t1ro | 42501 permission denied for table base_entity | UPDATE base_entity SET is_active = false
read_role_tenant_delete | S@t1ro | 42501 permission denied for table base_entity | DELETE FROM base_entity
read_role_tenant_audit | S@t1ro | 42501 permission denied for table audit_log | INSERT INTO audit_log (entity_id, entity_type, action, performed_by) VALUES ('<A>', 'x', 'x', '<A>')
read_role_tenant_do_insert | S@t1ro | 42501 permission denied for table base_entity | DO $$BEGIN INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>'); END$$
"#;

async fn run_case(c: &Client, via: &str, sql: &str) -> String {
    let run = async {
        match via {
            "S" => run(c, sql).await,
            "P" => match c.prepare(sql).await {
                Ok(st) => texts(c.query(&st, &[]).await),
                Err(e) => Err(show(&e)),
            },
            _ => texts(c.query_typed(sql, &[]).await),
        }
    };
    let own = |v: &String| if v == T1 { "own" } else { v }.to_owned();
    let r = tokio::time::timeout(LIMIT, run).await;
    match r.expect("attempt hangs") {
        Ok(rows) => rows.iter().fold("ok".into(), |s, v| s + " " + &own(v)),
        Err(e) => e,
    }
}

/// Every case by name, each from a fresh client: its outcome, then the attacker's and tenant
/// 2's views (exactly their own rows) and every row of every tenant (unchanged). All cases
/// run; the test fails at the end listing those that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_attempts_table() {
    let env = Env::new("").await;
    let victim = env.login("t2").await;
    let before = env.all_rows().await;
    let (forged, own_sig) = (sign(&random_hex(32), T2), sign(&env.key, T1));
    let (mut failed, mut count) = (Vec::new(), 0);
    for line in CASES.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.splitn(4, " | ").collect();
        let [name, via, want, sql] = fields[..] else {
            panic!("bad case {line:?}")
        };
        let (via, user) = via.split_once('@').unwrap_or((via, "t1"));
        let want = want.replace("GUARD", GUARD).replace("NOTHING", NOTHING);
        let subst = [("<SEEN>", SEEN), ("<T1>", T1), ("<T2>", T2), ("<A>", ACTOR)];
        let sql = subst
            .iter()
            .fold(sql.to_owned(), |s, (k, v)| s.replace(k, v));
        let sql = sql.replace("\\n", "\n").replace("\\t", "\t");
        let sql = sql.replace("<FORGED>", &forged).replace("<SIG>", &own_sig);
        let sql = sql.replace("<KEY>", &random_hex(32));
        let attacker = env.login(user).await;
        let got = run_case(&attacker, via, &sql).await;
        let mut problems = Vec::new();
        if !(got == want || (!want.starts_with("ok") && got.starts_with(&want))) {
            problems.push(format!("outcome {got:?}, expected {want:?}"));
        }
        let own = if user.starts_with("t1") { T1 } else { "" };
        problems.extend(env.view_problems(&attacker, own, user).await);
        problems.extend(env.view_problems(&victim, T2, "t2").await);
        if env.all_rows().await != before {
            problems.push("LEAK: rows changed".into());
        }
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        println!("case {name:<34} {verdict:<5} {got}");
        if !problems.is_empty() {
            failed.push(format!("{name}: {}", problems.join("; ")));
        }
        count += 1;
    }
    let metrics = env.proxy.metrics();
    for what in ["SET", "RESET", "set_config", "pg_settings", "ALTER ... SET"] {
        let series = format!("launch_proxy_guard_violations_total{{what=\"{what}\"}}");
        assert!(metrics.contains(&series), "metric {series} missing");
    }
    println!("{count} escape attempts, {} failed", failed.len());
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

// ------------------------------------------------------------- session state, one server

/// Tenant 2's client prepares the text tenant 1's did: the same server statement runs (also
/// as a generic plan) and returns tenant 2's rows only. Binding the proxy's server-side name
/// is refused; SQL `EXECUTE` of it runs as the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_shared_with_next_tenant_returns_its_rows() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let pid = "SELECT pg_backend_pid()";
    assert_eq!(col(&a, pid).await, col(&b, pid).await, "one server");
    let sql = "SELECT tenant_id::text FROM base_entity WHERE is_active";
    let count = "SELECT count(*)::text FROM base_entity WHERE tenant_id::text = $1";
    let (sa, sb) = (a.prepare(sql).await.unwrap(), b.prepare(sql).await.unwrap());
    let (pa, pb) = (a.prepare(count).await, b.prepare(count).await);
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    for round in 0..8 {
        for (c, st, p, own, other) in [(&a, &sa, &pa, T1, T2), (&b, &sb, &pb, T2, T1)] {
            let rows = texts(c.query(st, &[]).await);
            assert_eq!(rows, Ok(vec![own.into(); SEED]), "round {round}: {own}");
            for (t, want) in [(other, "0"), (own, "3")] {
                let n = texts(c.query(p, &[&t]).await);
                assert_eq!(n, Ok(vec![want.into()]), "round {round}: {own} counts {t}");
            }
        }
    }
    // A Bind naming a server-side statement the client never prepared is refused (26000).
    let mut w = Wire::login(env.proxy.port, "t2m");
    w.send(b'B', &[&cstr("")[..], &cstr("lp_1"), &[0; 6]].concat());
    w.send(b'E', &[0; 5]);
    w.send(b'S', b"");
    let r = w.results();
    assert!(r.as_ref().is_err_and(|e| e.starts_with("26000")), "{r:?}");
    env.check_own(&a, T1, "t1").await;
    env.check_own(&b, T2, "t2").await;
}

/// Tenant 1 tries to replace the statement the proxy prepared for tenant 2 on their shared
/// server connection: it learns the server-side name (once quoted in PostgreSQL's error for
/// a Bind with one parameter too many), then DEALLOCATEs and re-PREPAREs it with its own
/// code by each route below, so that tenant 2's next execution would run that code as
/// tenant 2 and pg_notify tenant 2's rows to tenant 1's listener. (This was a PROXY BUG;
/// random statement names, the closed pg_prepared_statements, DEALLOCATE ALL on tenant
/// switch and errors that name only the client's statements close it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_replaced_by_other_tenant_via_sql() {
    let env = Env::new(&SOLO.replace(": 1", ": 2")).await;
    // Tenant 1's listener keeps its own server connection inside a transaction.
    let (listener, notes) = env.try_login("t1").await.unwrap();
    let pid = col(&listener, "LISTEN exfil; SELECT pg_backend_pid()").await;
    assert_eq!(col(&listener, "BEGIN; SELECT pg_backend_pid()").await, pid);
    let (victim, attacker) = (env.login("t2").await, env.login("t1").await);
    for attack in [
        "SELECT name FROM pg_prepared_statements",
        "SELECT name FROM pg_catalog.pg_prepared_statement()",
        "PREPARE lp_1 AS SELECT pg_notify('exfil', tenant_id::text) FROM base_entity",
        "EXECUTE lp_1",
    ] {
        assert!(run(&attacker, attack).await.is_err(), "{attack} must fail");
    }
    let mut w = Wire::login(env.proxy.port, "t1m");
    let routes = [
        "do_block",
        "multi_statement",
        "comment_prefix",
        "deallocate_then_prepare",
    ];
    for (i, route) in routes.iter().enumerate() {
        let sql = format!("SELECT tenant_id::text FROM base_entity WHERE {i} = {i}");
        let st = victim.prepare(&sql).await.unwrap();
        assert_eq!(texts(victim.query(&st, &[]).await).unwrap(), [T2; SEED]);
        // The server-side name, from the error of a Bind with a parameter too many.
        w.send(b'P', &[cstr("s"), cstr(&sql), vec![0, 0]].concat());
        let bind = [0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0];
        w.send(b'B', &[&cstr("")[..], &cstr("s"), &bind].concat());
        w.send(b'C', b"Ss\0");
        w.send(b'S', b"");
        let err = w.results().expect_err("Bind with a parameter too many");
        let name = err.split('"').nth(1).unwrap_or("?").to_owned();
        let evil = format!(
            "SELECT b.tenant_id::text FROM base_entity b, \
             LATERAL (SELECT pg_notify('exfil', '{route} ' || b.tenant_id || ' ' || b.id)) n"
        );
        let quoted = evil.replace('\'', "''");
        let swaps = match *route {
            "do_block" => vec![format!(
                "DO $$BEGIN EXECUTE 'DEALLOCATE {name}'; EXECUTE 'PREPARE {name} AS {quoted}'; END$$"
            )],
            "multi_statement" => vec![format!("SELECT 1; DEALLOCATE {name}; PREPARE {name} AS {evil}")],
            "comment_prefix" => vec![format!("/**/ DEALLOCATE {name}"), format!("/**/ PREPARE {name} AS {evil}")],
            _ => vec![format!("DEALLOCATE {name}; PREPARE {name} AS {evil}")],
        };
        for swap in &swaps {
            let r = run(&attacker, swap).await;
            println!("{route}: {swap:.60}...: {r:?}");
        }
        let rows = texts(victim.query(&st, &[]).await);
        println!("{route}: tenant 2 got {rows:?} (server name {name:?} from {err:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    col(&listener, "COMMIT").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = notes.lock().unwrap().clone();
    let leaked = |r: &&&str| {
        got.iter()
            .any(|n| n.starts_with(&format!("exfil:{r} {T2}")))
    };
    let replaced: Vec<_> = routes.iter().filter(leaked).collect();
    assert!(
        replaced.is_empty(),
        "LEAK: tenant 1 got tenant 2's rows by {replaced:?}: {got:?}"
    );
}

/// Tenant 1's WITH HOLD cursor outlives its transaction; tenant 2, next on the connection,
/// cannot FETCH from it or see it in pg_cursors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cursor_is_gone_for_next_tenant() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let declare = "DECLARE held CURSOR WITH HOLD FOR SELECT tenant_id FROM base_entity";
    col(&a, &format!("BEGIN; {declare}; COMMIT")).await;
    assert_eq!(col(&a, "FETCH 1 FROM held").await, [T1], "own cursor");
    for sql in ["FETCH ALL FROM held", "MOVE ABSOLUTE 0 IN held"] {
        let err = fails(&b, sql).await;
        assert!(err.starts_with("34000"), "tenant 2: {sql}: {err}");
    }
    assert_eq!(col(&b, "SELECT count(*) FROM pg_cursors").await, ["0"]);
    env.check_own(&b, T2, "t2").await;
    env.check_own(&a, T1, "t1").await;
    // Declared through the extended protocol (Parse, Bind, Execute), and after a
    // transaction of plain DML on the connection, which alone would not drop it.
    let declare = "DECLARE held2 CURSOR WITH HOLD FOR SELECT tenant_id FROM base_entity";
    a.execute(declare, &[]).await.unwrap();
    assert_eq!(col(&a, "SELECT count(*) FROM base_entity").await, ["3"]);
    assert_eq!(col(&a, "FETCH 1 FROM held2").await, [T1], "own cursor");
    let err = fails(&b, "FETCH ALL FROM held2").await;
    assert!(err.starts_with("34000"), "tenant 2: {err}");
    env.check_own(&b, T2, "t2").await;
}

/// Tenant 1 LISTENs on the shared connection; after tenant 2 ran on it, NOTIFYs (sent while
/// tenant 2 runs or while the connection idles) never reach tenant 2. Control: a listener that
/// keeps its connection gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_registration_dropped_when_tenant_changes() {
    let env = Env::new(SOLO).await;
    let (a, a_notes) = env.try_login("t1").await.unwrap();
    let (b, b_notes) = env.try_login("t2").await.unwrap();
    col(&a, "LISTEN secrets").await;
    env.check_own(&b, T2, "t2 after t1's LISTEN").await;
    col(&b, "BEGIN").await;
    env.su1("NOTIFY secrets, 'sent while t2 runs'").await;
    col(&b, "COMMIT").await;
    col(&a, "LISTEN secrets").await;
    env.su1("NOTIFY secrets, 'sent while idle'").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.check_own(&b, T2, "t2 after an idle NOTIFY").await;
    col(&a, "LISTEN control").await;
    col(&a, "BEGIN").await;
    env.su1("NOTIFY control, 'for t1'").await;
    col(&a, "COMMIT").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_got = a_notes.lock().unwrap().clone();
    assert_eq!(a_got, ["control:for t1"], "tenant 1: control");
    let b_got = b_notes.lock().unwrap().clone();
    assert!(b_got.is_empty(), "LEAK: tenant 2 received {b_got:?}");
}

/// Gives the application role the session-level advisory lock functions back, as a DBA
/// may (migrations/0005 revokes them); server connections opened afterwards release such
/// locks on every tenant switch.
async fn grant_session_locks(env: &Env) {
    let grant = "GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint), \
                 pg_advisory_lock_shared(bigint), pg_try_advisory_lock(bigint) TO app";
    col(&env.su, grant).await;
}

/// The last query of the application's server connection, as the superuser sees it.
async fn last_server_query(env: &Env) -> String {
    env.su1("SELECT query FROM pg_stat_activity WHERE usename = 'app'")
        .await
}

/// With migrations/0005 a tenant cannot take a session-level advisory lock, which would
/// outlive its transaction and pass to the next tenant on the connection; transaction-level
/// locks work, and the tenant switch then has no lock release to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_locks_are_refused_to_tenants() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    for sql in [
        "SELECT pg_advisory_lock(4242)",
        "SELECT pg_try_advisory_lock_shared(1, 2)",
        "SELECT pg_catalog.pg_try_advisory_lock(4242)",
    ] {
        let e = fails(&a, sql).await;
        assert!(
            e.starts_with("42501 permission denied for function"),
            "{sql}: {e}"
        );
    }
    let xact = "SELECT pg_try_advisory_xact_lock(4242)::text";
    assert_eq!(col(&a, &format!("BEGIN; {xact}; COMMIT")).await, ["true"]);
    env.check_own(&b, T2, "t2").await;
    assert_eq!(
        col(&b, xact).await,
        ["true"],
        "the lock ended with t1's transaction"
    );
    env.check_own(&a, T1, "t1").await;
    assert_eq!(col(&b, "SELECT 2").await, ["2"]);
    let seen = last_server_query(&env).await;
    assert!(seen.contains(T2) && !seen.contains("advisory"), "{seen}");
}

/// Where the role may take them (granted back), tenant 1's session advisory locks are gone
/// when tenant 2 runs on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_session_advisory_lock_of_previous_tenant_is_released() {
    let env = Env::new(SOLO).await;
    grant_session_locks(&env).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let lock = "SELECT pg_advisory_lock(4242), pg_advisory_lock_shared(7); \
                SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'";
    assert_eq!(col(&a, lock).await, ["", "2"]);
    let sql = "SELECT pg_try_advisory_lock(4242)::text || pg_try_advisory_xact_lock(7)::text";
    assert_eq!(col(&b, sql).await, ["truetrue"]);
    let seen = last_server_query(&env).await;
    assert!(seen.contains("pg_advisory_unlock_all()"), "{seen}");
    assert_eq!(col(&b, "SELECT pg_advisory_unlock(4242)").await, ["t"]);
    env.check_own(&b, T2, "t2").await;
}

/// A plain DML Query carries the tenant switch in its own message. When the client's
/// statements fail, the transaction rolls the settings back to the previous tenant's: the
/// next statement, even one pipelined behind the failing one, must still run as the
/// client's tenant. Error positions are the client's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_switch_rolled_back_by_a_failure_is_applied_again() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let whose = "SELECT coalesce(launch.current_tenant(), '-') FROM (SELECT 1) x";
    for round in 0..3 {
        assert_eq!(col(&a, whose).await, [T1], "round {round}: tenant 1");
        // Fails inside the Query that carried tenant 2's switch.
        let e = fails(
            &b,
            "SELECT 1 / (SELECT count(*) - count(*) FROM base_entity)",
        )
        .await;
        assert!(e.starts_with("22012"), "{e}");
        assert_eq!(
            col(&b, whose).await,
            [T2],
            "round {round}: after the failure"
        );
        // The same, with the next Query sent while the failing one still runs.
        assert_eq!(col(&a, whose).await, [T1]);
        let bad = b.simple_query("SELECT 1 / (count(*) - count(*)) FROM (SELECT pg_sleep(0.2)) s");
        let next = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.simple_query(whose).await
        };
        let (bad, next) = tokio::join!(bad, next);
        assert!(bad.is_err(), "the first fails");
        let rows: Vec<String> = next
            .expect("the pipelined query runs")
            .into_iter()
            .filter_map(|m| match m {
                Msg::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(rows, [T2], "round {round}: pipelined behind the failure");
        env.check_own(&b, T2, "t2").await;
    }
    // The carried switch's text (with the signature) is not the client's to read.
    let e = fails(&b, "SELECT current_query()").await;
    assert!(e.starts_with("42501"), "{e}");
    // An error's position counts from the start of the client's own SQL, whether the
    // switch was carried in front of it or not. A syntax error makes PostgreSQL refuse the
    // whole Query, the switch included: it is still the client's own error, its session
    // goes on, and its next statement runs as its tenant.
    let errors = [
        ("SELECT nosuchcolumn FROM base_entity", "42703", 8),
        ("SELECT 1 FROM WHERE ((", "42601", 15),
        ("SELECT 'unterminated", "42601", 8),
    ];
    for (sql, code, at) in errors {
        for carried in [true, false] {
            if carried {
                assert_eq!(col(&a, whose).await, [T1]);
            }
            let e = b.simple_query(sql).await.expect_err(sql);
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            assert_eq!(db.code().code(), code, "{sql}: {db}");
            assert_eq!(
                db.position(),
                Some(&tokio_postgres::error::ErrorPosition::Original(at)),
                "{sql}, carried: {carried}"
            );
            assert_eq!(col(&b, whose).await, [T2], "{sql}: the session goes on");
        }
    }
    env.check_own(&a, T1, "t1").await;
    env.check_own(&b, T2, "t2").await;
}

/// Timeouts tenant 1 hides from the proxy with set_config (lock, idle-in-transaction and, on
/// PostgreSQL 17, transaction timeouts) would end tenant 2's transactions on the shared
/// connection; the prelude puts them back to the role's values. A client's own SET of one
/// still follows that client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_timeouts_of_previous_tenant_are_reset() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let pg17 = col(&a, "SHOW server_version_num").await[0].as_str() >= "170000";
    let mut names = vec!["lock_timeout", "idle_in_transaction_session_timeout"];
    if pg17 {
        names.push("transaction_timeout");
    }
    let show = |n: &str| format!("SELECT current_setting('{n}')");
    let mut role_values = Vec::new();
    for n in &names {
        role_values.push(col(&b, &show(n)).await);
        col(&a, &format!("SELECT set_config('{n}', '1ms', false)")).await;
        assert_eq!(
            col(&a, &show(n)).await,
            ["1ms"],
            "{n} set on tenant 1's connection"
        );
    }
    for (n, want) in names.iter().zip(&role_values) {
        assert_eq!(&col(&b, &show(n)).await, want, "{n} for tenant 2");
    }
    // An explicit transaction that idles and waits longer than the hidden timeouts.
    let tx = "BEGIN; SELECT pg_sleep(0.05); SELECT count(*) FROM base_entity; COMMIT";
    assert!(run(&b, tx).await.is_ok(), "tenant 2's transaction survives");
    col(&b, "SET lock_timeout = '7s'").await;
    col(&a, "SELECT 1").await;
    assert_eq!(
        col(&b, &show("lock_timeout")).await,
        ["7s"],
        "tenant 2's own SET"
    );
    env.check_own(&b, T2, "t2").await;
}

/// CancelRequests with tenant 2's pid and wrong secrets, guessed neighbouring pids, or tenant
/// 1's own key do not cancel tenant 2's query, which returns its rows. Control: its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_with_foreign_keys_do_not_cancel() {
    let env = Env::new("").await;
    let port = env.proxy.port;
    let (w1, mut w2) = (Wire::login(port, "t1m"), Wire::login(port, "t2m"));
    let (pid, secret) = (w2.pid, w2.secret);
    let run = std::thread::spawn(move || {
        let start = Instant::now();
        let r = w2.query("SELECT tenant_id FROM base_entity, pg_sleep(2)");
        (r, start.elapsed(), w2)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (near, guess) = (pid.wrapping_add(1), secret.wrapping_add(1));
    let (below, w1) = (pid.wrapping_sub(1), (w1.pid, w1.secret));
    let wrong = [(pid, secret ^ 1), (pid, guess), (pid, 0)];
    let others = [(near, secret), (below, secret), w1, (w1.0, secret)];
    for (p, s) in wrong.into_iter().chain(others) {
        blocking(|| cancel(port, p, s));
    }
    let (r, took, mut w2) = blocking(|| run.join().unwrap());
    assert_eq!(r, Ok(vec![T2.into(); SEED]), "took {took:?}");
    assert!(took >= Duration::from_secs(2));
    let run = std::thread::spawn(move || w2.query("SELECT pg_sleep(20)"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| cancel(port, pid, secret));
    let r = blocking(|| run.join().unwrap());
    let cancelled = r.as_ref().is_err_and(|e| e.starts_with("57014"));
    assert!(cancelled, "own cancel: {r:?}");
}

/// command_timeout_ms (400) cuts tenant 1's long transaction (also a DO block that set tenant
/// 2's id first); the next transactions on that connection see exactly their own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_then_next_transaction_sees_own_tenant() {
    let ids = [T1, T2, T3].map(String::from);
    let short = |c: String| c.replace("command_timeout_ms: 30000", "command_timeout_ms: 400");
    let env = Env::start(SOLO, "", "", &ids, short).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    col(&a, "BEGIN").await;
    let start = Instant::now();
    let err = fails(&a, "SELECT tenant_id FROM base_entity, pg_sleep(10)").await;
    assert!(err.starts_with("57014"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    col(&a, "ROLLBACK").await;
    let set = format!("PERFORM set_config('app.tenant_id', '{T2}', false)");
    let sql = format!("DO $$BEGIN {set}; PERFORM pg_sleep(10); END$$");
    let err = fails(&a, &sql).await;
    assert!(err.starts_with("57014"), "{err}");
    env.check_own(&b, T2, "t2 after t1's timeout").await;
    env.check_own(&a, T1, "t1 after its timeout").await;
}

/// The server connection is killed mid-transaction; the client gets an error, logs in again
/// and sees only its tenant, as does the next tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transaction_then_reconnect_sees_own_tenant() {
    let env = Env::new(SOLO).await;
    let a = env.login("t1").await;
    col(&a, "BEGIN; SELECT count(*) FROM base_entity").await;
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE usename = 'app'";
    assert_eq!(env.su1(kill).await, "1");
    assert!(run(&a, "SELECT tenant_id FROM base_entity").await.is_err());
    env.check_own(&env.login("t1").await, T1, "t1 again").await;
    env.check_own(&env.login("t2").await, T2, "t2 next").await;
}

/// psql through the proxy: `(ok, stdout, stderr)`; `stdin` feeds COPY FROM STDIN.
fn psql(env: &Env, user: &str, sql: &str, stdin: &str) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(psql_bin());
    let args = "-X -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c";
    cmd.args(args.split(' ')).arg(sql);
    cmd.arg(env.proxy.conn_string(user, &pw(user)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("run psql");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// COPY TO STDOUT (psql) yields own rows only. (Under row-level security COPY reads `ONLY`
/// the named table: the partitioned audit_log gives no row; the query form reads them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_only_own_rows() {
    let env = Env::new("").await;
    let both = "SELECT tenant_id FROM base_entity UNION ALL SELECT tenant_id FROM audit_log";
    for (sql, n) in [
        ("COPY base_entity (tenant_id) TO STDOUT".to_owned(), SEED),
        ("COPY audit_log (tenant_id) TO STDOUT".to_owned(), 0),
        (format!("COPY ({both}) TO STDOUT"), 2 * SEED),
    ] {
        let (ok, out, err) = blocking(|| psql(&env, "t2", &sql, ""));
        assert!(ok, "{sql}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.iter().all(|l| *l == T2), "LEAK: {sql}: {lines:?}");
        assert_eq!(lines.len(), n, "{sql}");
    }
}

/// COPY FROM STDIN (psql) of another tenant's rows is refused: PostgreSQL refuses COPY FROM
/// into tables under row-level security (0A000); the same row by INSERT meets the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_with_other_tenant_refused() {
    let env = Env::new("").await;
    let before = env.all_rows().await;
    let base = "base_entity (tenant_id, created_by, updated_by)";
    let audit_cols = "audit_log (tenant_id, entity_id, entity_type, action, performed_by)";
    for (table, data) in [
        (base.to_owned(), format!("{T2}\t{ACTOR}\t{ACTOR}\n")),
        (
            audit_cols.to_owned(),
            format!("{T2}\t{ACTOR}\tx\tx\t{ACTOR}\n"),
        ),
    ] {
        let sql = format!("COPY {table} FROM STDIN");
        let (ok, _, err) = blocking(|| psql(&env, "t1", &sql, &data));
        let refused = err.contains("0A000: COPY FROM not supported with row-level security");
        assert!(!ok && refused, "{sql}: {err}");
    }
    let insert = format!("INSERT INTO {base} VALUES ('{T2}', '{ACTOR}', '{ACTOR}')");
    let (ok, _, err) = blocking(|| psql(&env, "t1", &insert, ""));
    let refused = err.contains("42501: new row violates row-level security");
    assert!(!ok && refused, "{err}");
    assert_eq!(env.all_rows().await, before, "rows changed");
}

/// A suspended tenant is refused at login (28000 "is not active"), and its connected client
/// from its next transaction once the status cache (200 ms) expires; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_tenant_refused_at_login_and_next_transaction() {
    let ids = [T1, T2, T3].map(String::from);
    let env = Env::start("", ", status_cache_ms: 200", "", &ids, |c| c).await;
    let c3 = env.login("t3").await;
    env.check_own(&c3, T3, "t3 active").await;
    let status = |s: &str| format!("UPDATE tenants SET status = '{s}' WHERE id = '{T3}'");
    env.su1(&status("suspended")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = |e: &str| e.starts_with("28000") && e.contains("is not active");
    let err = show(&env.try_login("t3").await.expect_err("login refused"));
    assert!(refused(&err), "login: {err}");
    let err = fails(&c3, "SELECT tenant_id FROM base_entity").await;
    assert!(refused(&err), "connected: {err}");
    env.check_own(&env.login("t1").await, T1, "t1").await;
    env.su1(&status("active")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.check_own(&env.login("t3").await, T3, "t3 again").await;
}

/// Tenant 1 makes the prelude fail on the connection it leaves: thousands of session advisory
/// locks make pg_advisory_unlock_all() slow, and a tiny statement_timeout or
/// transaction_timeout set by set_config() (invisible to the proxy) cuts it. Tenant 2's INSERT
/// must then not run with tenant 1's signed settings. (This was a PROXY BUG: the INSERT went
/// out in the same write as the prelude and landed among tenant 1's rows; fixed in 3e5bff8.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_prelude_does_not_run_next_tenant_statement_as_previous_tenant() {
    let env = Env::new(SOLO).await;
    grant_session_locks(&env).await;
    let a = env.login("t1").await;
    let values = format!("VALUES ('{T2}', '{T2}') RETURNING tenant_id");
    let insert = format!("INSERT INTO base_entity (created_by, updated_by) {values}");
    let set = |name: &str, v: &str| format!("SELECT set_config('{name}', '{v}', false)");
    let by_t2 = format!("SELECT count(*) FROM base_entity WHERE created_by = '{T2}'");
    let misplaced = format!("{by_t2} AND tenant_id <> '{T2}'");
    let mut failures = 0;
    for (locks, ms) in [(10000, 2), (14000, 3), (16000, 1)] {
        for timeout in ["statement_timeout", "transaction_timeout"] {
            let b = env.login("t2").await;
            env.check_own(&b, T2, "t2 before").await;
            col(&a, &set(timeout, "0")).await;
            let lock = "SELECT count(pg_advisory_lock(g)) FROM generate_series(1, ";
            col(&a, &format!("{lock}{locks}) g")).await;
            col(&a, &set(timeout, &format!("{ms}ms"))).await;
            let got = run(&b, &insert).await;
            println!("{locks} locks, {timeout} {ms} ms: tenant 2's INSERT: {got:?}");
            failures += usize::from(got.is_err());
            if env.su1(&misplaced).await != "0" {
                let seen = col(&a, &by_t2).await;
                panic!("LEAK: tenant 2's INSERT ran as tenant 1, which reads {seen:?} rows");
            }
        }
    }
    println!("the prelude failed {failures} times; no statement of tenant 2 ran as tenant 1");
    // A 1 ms transaction_timeout over thousands of unlocks ends the prelude's transaction:
    // without a failure this test would prove nothing about the pipelined prelude.
    assert!(failures > 0, "the prelude never failed");
}

/// With `tenant.statement_guard: false` (the comparison run of scripts/bench-compare) a
/// client's SET of the tenant reaches PostgreSQL, and the database still trusts no tenant
/// without its signature: the forged tenant sees no row of anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_guard_a_forged_tenant_still_sees_nothing() {
    let ids = [T1, T2, T3].map(String::from);
    let env = Env::start(SOLO, ", statement_guard: false", "", &ids, |c| c).await;
    let a = env.login("t1").await;
    env.check_own(&a, T1, "t1").await;
    col(&a, &format!("SET app.tenant_id = '{T2}'")).await;
    let seen = "SELECT count(*) || ' ' || coalesce(launch.current_tenant(), '-') FROM base_entity";
    assert_eq!(
        col(&a, seen).await,
        ["0 -"],
        "a forged tenant must see nothing"
    );
    let other = format!("SELECT count(*) FROM base_entity WHERE tenant_id = '{T2}'");
    assert_eq!(
        env.su1(&other).await.parse::<i64>().map(|n| n > 0),
        Ok(true)
    );
}

/// The prelude is pipelined with the client's first transaction on a connection but runs in
/// a transaction of its own: a client whose first transaction there rolls back (simple
/// Query, separate messages, or extended protocol) still has its tenant afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_first_transaction_keeps_the_tenant() {
    let env = Env::new(SOLO).await;
    let a = env.login("t1").await;
    let b = env.login("t2").await;
    let mine = "SELECT coalesce(launch.current_tenant(), '-')";
    for round in 0..3 {
        env.check_own(&a, T1, "t1").await;
        match round {
            0 => drop(col(&b, &format!("BEGIN; {mine}; ROLLBACK")).await),
            1 => {
                col(&b, "BEGIN").await;
                assert_eq!(col(&b, mine).await, [T2]);
                col(&b, "ROLLBACK").await;
            }
            _ => {
                use tokio::time::timeout;
                let begin = timeout(LIMIT, b.execute("BEGIN", &[])).await;
                begin.expect("hangs").expect("BEGIN");
                let row = timeout(LIMIT, b.query_one(mine, &[])).await;
                assert_eq!(row.expect("hangs").expect(mine).get::<_, String>(0), T2);
                let end = timeout(LIMIT, b.execute("ROLLBACK", &[])).await;
                end.expect("hangs").expect("ROLLBACK");
            }
        }
        env.check_own(&b, T2, &format!("t2 after its rollback (round {round})"))
            .await;
    }
}

// ------------------------------------------------------------------------- concurrency

#[derive(Default)]
struct Tally {
    transactions: u64,
    rows: u64,
    written: u64,
    problems: Vec<String>,
}

/// A write read back: the new row's and its audit row's tenants, then the row read back.
async fn write_own(c: &Client, me: &str, t: &mut Tally) -> Result<Vec<String>, String> {
    let sql = format!(
        "WITH e AS (INSERT INTO base_entity (created_by, updated_by) VALUES ('{me}', '{me}')
                    RETURNING id, tenant_id),
              a AS (INSERT INTO audit_log (entity_id, entity_type, action, performed_by)
                    SELECT id, 'base_entity', 'create', '{me}' FROM e RETURNING tenant_id)
         SELECT e.tenant_id || ' ' || a.tenant_id || ' ' || e.id FROM e, a"
    );
    let row = run(c, &sql).await?.concat();
    let parts: Vec<String> = row.split(' ').map(str::to_owned).collect();
    let [tenant, audit, id] = &parts[..] else {
        return Err(format!("insert returned {row:?}"));
    };
    t.written += 1;
    let back = format!("SELECT tenant_id FROM base_entity WHERE id = '{id}'");
    let back = run(c, &back).await?;
    Ok([vec![tenant.clone(), audit.clone()], back].concat())
}

/// One client of tenant `ids[n % len]`: up to `rounds` transactions of a random mix.
async fn tenant_client(env: Arc<Env>, ids: Arc<Vec<String>>, n: usize, rounds: usize) -> Tally {
    let (k, end) = (n % ids.len(), Instant::now() + Duration::from_secs(20));
    let (me, other) = (ids[k].as_str(), ids[(k + 1 + n % 7) % ids.len()].as_str());
    let user = format!("t{k:03}");
    let mut t = Tally::default();
    let c = match env.try_login(&user).await {
        Ok((c, _)) => c,
        Err(e) => {
            t.problems.push(format!("{user}: login {}", show(&e)));
            return t;
        }
    };
    let audit = "SELECT tenant_id::text FROM audit_log";
    let mut st = c.prepare(audit).await.expect("prepare");
    let set = format!("set_config('app.tenant_id', '{other}', true)");
    let cols = "base_entity (tenant_id, created_by, updated_by)";
    let insert = format!("INSERT INTO {cols} VALUES ('{other}', '{me}', '{me}')");
    let escapes = [
        (format!("SET app.tenant_id = '{other}'"), GUARD),
        (format!("SELECT {}", set.replace("true", "false")), GUARD),
        (
            "SELECT 1; SELECT 2; RESET app.tenant_sig; SELECT 3".into(),
            GUARD,
        ),
        (format!("DO $$BEGIN PERFORM {set}; {SEEN} END$$"), NOTHING),
        (insert, "42501 new row violates"),
        ("RESET ALL".into(), "ok"),
        ("DISCARD ALL".into(), "ok"),
    ];
    let base = "SELECT tenant_id FROM base_entity";
    let mut rng = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for round in 0..rounds {
        if Instant::now() > end {
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // The tenant ids seen (all this client's, at least SEED of them), or a problem.
        let seen = match rng % 10 {
            0..=2 => run(&c, base).await,
            3..=4 => run(&c, "SELECT tenant_id FROM audit_log").await,
            5..=6 => texts(c.query(&st, &[]).await),
            7..=8 => write_own(&c, me, &mut t).await,
            _ => {
                let (sql, want) = &escapes[round % escapes.len()];
                match run(&c, sql).await {
                    Err(e) if e.starts_with(want) => run(&c, base).await,
                    Ok(_) if *want == "ok" => {
                        // DISCARD ALL drops the client's prepared statements too.
                        st = c.prepare(audit).await.expect("prepare again");
                        run(&c, base).await
                    }
                    Err(e) => Err(format!("{sql:?}: {e}")),
                    Ok(r) => Err(format!("LEAK: {sql:?} succeeded: {r:?}")),
                }
            }
        };
        t.transactions += 1;
        match seen {
            Ok(rows) if rows.iter().any(|r| r != me) => {
                t.problems.push(format!("LEAK: {user} ({me}) saw {rows:?}"))
            }
            Ok(rows) if rows.len() < SEED => t.problems.push(format!("{user}: saw {rows:?}")),
            Ok(rows) => t.rows += rows.len() as u64,
            Err(e) => t.problems.push(format!("{user}: {e}")),
        }
    }
    t
}

/// 200 clients of 50 tenants (t000..t049) on 10 server connections: reads (simple and named
/// prepared), writes read back, inserts with another tenant's id and escape attempts; every
/// row read must be the client's tenant's, and as superuser every row written its writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tenants_see_only_their_rows() {
    const TENANTS: usize = 50;
    const CLIENTS: usize = 200;
    let ids: Vec<String> = (0..TENANTS).map(|i| format!("01JBXC0NC{i:017}")).collect();
    let user = |(i, t): (usize, &String)| user_line(&format!("t{i:03}"), t, "write", "app", "");
    let users: String = ids.iter().enumerate().map(user).collect();
    let pool = "default_pool_size: 10\nmax_db_connections: 10\nmax_user_connections: 10\n\
                min_pool_size: 2\nreserve_pool_size: 0";
    let env = Arc::new(Env::start(pool, "", &users, &ids, |c| c).await);
    let (ids, start) = (Arc::new(ids), Instant::now());
    let clients = (0..CLIENTS).map(|n| tenant_client(env.clone(), ids.clone(), n, 40));
    let tasks: Vec<_> = clients.map(tokio::spawn).collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("client task");
        all.transactions += t.transactions;
        all.rows += t.rows;
        all.written += t.written;
        all.problems.extend(t.problems);
    }
    let leaks = all.problems.iter().filter(|p| p.contains("LEAK")).count();
    let errors = all.problems.len() - leaks;
    let (txns, rows, written) = (all.transactions, all.rows, all.written);
    println!(
        "concurrency: {CLIENTS} clients of {TENANTS} tenants on 10 server connections: \
         {txns} transactions checked, {rows} rows checked, {written} rows written, {leaks} \
         leaks, {errors} unexpected errors, in {:?}",
        start.elapsed()
    );
    let shown = all.problems.iter().take(20).cloned().collect::<Vec<_>>();
    assert!(all.problems.is_empty(), "{shown:#?}");
    assert!(txns >= 4000, "only {txns} transactions");
    for (table, by) in [("base_entity", "created_by"), ("audit_log", "performed_by")] {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE {by} <> tenant_id) || ' ' || count(*) FROM {table} \
             WHERE {by} <> '{ACTOR}'"
        );
        let want = format!("0 {written}");
        assert_eq!(env.su1(&sql).await, want, "{table}: misplaced, written");
    }
    let conns = "SELECT count(*) <= 10 FROM pg_stat_activity WHERE usename = 'app'";
    assert_eq!(env.su1(conns).await, "t", "server connections");
}
