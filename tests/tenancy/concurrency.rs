//! Many tenants' clients at once on a small pool.

use super::*;

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
        (format!("DO $$BEGIN PERFORM {set}; {SEEN} END$$"), NO_DO),
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

/// One tenant's client pipelining three rounds of `batches` batches of escape attempts and checks, each
/// message padded to 4 kB and each check answered with 64 kB, so that the server's socket
/// fills and the proxy's writes wait while it reads the replies (relay::duplex); every row must be the client's tenant's and
/// every escape refused. Returns the problems found.
fn pipelined_tenant(port: u16, user: &str, own: &str, other: &str, batches: usize) -> Vec<String> {
    let mut w = Wire::login(port, user);
    let pad = "-".repeat(4000);
    let check = format!(
        "SELECT count(*) || ' ' || coalesce(launch.current_tenant(), '-'), repeat('x', 64000) \
         FROM base_entity /* {pad} */"
    );
    let set = format!("SET app.tenant_id = '{other}' /* {pad} */");
    let call = format!("SELECT set_config('app.tenant_id', '{other}', false) /* {pad} */");
    let batch: Vec<u8> = [&set, &check, &call, &check]
        .map(|sql| common::raw::q(sql))
        .concat();
    let (want_row, mut problems) = (format!("{SEED} {own}"), Vec::new());
    // In rounds: the client's pipeline drains between them, and the connection goes to
    // the other tenant if it waits.
    for round in 0..3 {
        let (mut writer, batch) = (w.s.try_clone().unwrap(), batch.clone());
        // The server sleeps first, reading nothing meanwhile: the batches behind fill its
        // socket and the proxy's write waits.
        // (Two statements: not carried in one message with the tenant switch, whose answer
        // the client's next messages would wait for.)
        let sleep = common::raw::q("SELECT 1; SELECT pg_sleep(0.1)::text");
        let sender = std::thread::spawn(move || {
            writer.write_all(&sleep).is_ok()
                && (0..batches).all(|_| writer.write_all(&batch).is_ok())
        });
        if w.results() != Ok(vec!["1".into(), String::new()]) {
            problems.push(format!("{user} round {round}: the sleep failed"));
        }
        for i in 0..batches * 4 {
            let got = w.results();
            let ok = match (i % 2, &got) {
                (0, Err(e)) => e.starts_with("42501 permission denied"),
                (1, Ok(rows)) => rows == std::slice::from_ref(&want_row),
                _ => false,
            };
            if !ok {
                problems.push(format!("{user} round {round} reply {i}: {got:?}"));
            }
        }
        assert!(sender.join().unwrap(), "{user}: the proxy stopped reading");
    }
    problems
}

/// Two tenants on one server connection, each pipelining megabytes of escape attempts and
/// checks faster than PostgreSQL takes them: the switches between them run while the
/// proxy's writes to the server wait and its replies are read (relay::duplex). Neither
/// sees the other's rows or changes its own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipelines_of_two_tenants_on_one_connection() {
    let env = Env::new(SOLO).await;
    let port = env.proxy.port;
    let one = std::thread::spawn(move || pipelined_tenant(port, "t1m", T1, T2, 600));
    let two = std::thread::spawn(move || pipelined_tenant(port, "t2m", T2, T1, 600));
    let problems = blocking(|| [one.join().unwrap(), two.join().unwrap()].concat());
    let shown = problems.iter().take(10).collect::<Vec<_>>();
    assert!(
        problems.is_empty(),
        "{} problems: {shown:#?}",
        problems.len()
    );
    let body = blocking(|| env.proxy.metrics());
    let count = |name: &str| common::metric(&body, name, &[("pool", "app")]);
    let switches = count("launch_proxy_tenant_switches_total");
    let waits = count("launch_proxy_server_write_waits_total");
    println!("{switches} tenant switches, {waits} writes that waited");
    assert!(
        switches >= 4.0,
        "the two tenants hardly took turns: {switches} switches"
    );
    assert!(
        waits >= 1.0,
        "no write to the server waited: relay::duplex untested"
    );
}
