//! The Rust drivers, linked into this test binary and driven in-process on a tokio
//! runtime rather than run as child processes: tokio-postgres (statements prepared once,
//! reused across transactions and across server-connection churn) and sqlx's PgPool with
//! its default statement cache. Neither needs an external installation.

use super::{
    assert_proxy_statements_used, assert_within_pool, count, server_logins, start_logged, DATABASE,
    PASSWORD, POOL2, USER,
};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

// -------------------------------------------------------------------- tokio-postgres

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{e}: {} {} ({:?})",
            db.code().code(),
            db.message(),
            db.detail()
        ),
        None => format!("{e:?}"),
    }
}

async fn tp_connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One tokio-postgres client: three statements prepared once and used 40 times each,
/// every other round inside a transaction.
async fn tp_worker(conn: String, c: i32, rounds: i32) -> Result<i32, String> {
    let mut client = tp_connect(&conn).await;
    let e = |what: &str, i: i32| {
        let what = what.to_owned();
        move |err: tokio_postgres::Error| format!("client {c} {what} #{i}: {}", describe(&err))
    };
    let sel = client
        .prepare("SELECT $1::int4 * 2, $2::text || '!'")
        .await
        .map_err(e("prepare select", 0))?;
    let ins = client
        .prepare("INSERT INTO tp_items (client, i, v) VALUES ($1, $2, $3)")
        .await
        .map_err(e("prepare insert", 0))?;
    let cnt = client
        .prepare_typed(
            "SELECT count(*) FROM tp_items WHERE client = $1",
            &[Type::INT4],
        )
        .await
        .map_err(e("prepare count", 0))?;
    for i in 0..rounds {
        let label = format!("c{c}-{i}");
        let (row, n) = if i % 2 == 0 {
            let tx = client.transaction().await.map_err(e("begin", i))?;
            let row = tx
                .query_one(&sel, &[&i, &label])
                .await
                .map_err(e("select", i))?;
            tx.execute(&ins, &[&c, &i, &label])
                .await
                .map_err(e("insert", i))?;
            let n: i64 = tx
                .query_one(&cnt, &[&c])
                .await
                .map_err(e("count", i))?
                .get(0);
            tx.commit().await.map_err(e("commit", i))?;
            (row, n)
        } else {
            let row = client
                .query_one(&sel, &[&i, &label])
                .await
                .map_err(e("select", i))?;
            client
                .execute(&ins, &[&c, &i, &label])
                .await
                .map_err(e("insert", i))?;
            let n: i64 = client
                .query_one(&cnt, &[&c])
                .await
                .map_err(e("count", i))?
                .get(0);
            (row, n)
        };
        let (doubled, text): (i32, String) = (row.get(0), row.get(1));
        if doubled != i * 2 || text != format!("{label}!") || n != i64::from(i) + 1 {
            return Err(format!(
                "client {c} round {i}: got ({doubled}, {text:?}, count {n})"
            ));
        }
        tokio::task::yield_now().await;
    }
    Ok(c)
}

/// tokio-postgres: six clients, each preparing its statements once (client.prepare) and
/// running them across 40 transactions and autocommit statements, over two server
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements() {
    let (pg, proxy) = start_logged(POOL2);
    let conn = proxy.conn_string(USER, PASSWORD);
    let setup = tp_connect(&conn).await;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS tp_items; \
             CREATE TABLE tp_items (client int, i int, v text, PRIMARY KEY (client, i))",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let tasks: Vec<_> = (0..6)
        .map(|c| tokio::spawn(tp_worker(conn.clone(), c, 40)))
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.expect("client task panicked") {
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "tokio-postgres clients failed:\n{}",
        errors.join("\n")
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM tp_items"), 6 * 40);
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

/// tokio-postgres: a statement prepared once, then used after other clients churned the
/// pool: server connections are replaced every 3 transactions (server_max_uses) and keep
/// only 4 statements (prepared_statement_cache_size), while the others prepare and close
/// many statements of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_statement_survives_pool_churn() {
    let pool = format!("{POOL2}\nserver_max_uses: 3\nprepared_statement_cache_size: 4");
    let (pg, proxy) = start_logged(&pool);
    let conn = proxy.conn_string(USER, PASSWORD);
    let mut keeper = tp_connect(&conn).await;
    let stmt = keeper
        .prepare("SELECT $1::int8 + 1000, $2::text")
        .await
        .unwrap_or_else(|e| panic!("prepare: {}", describe(&e)));
    let row = keeper
        .query_one(&stmt, &[&1i64, &"first"])
        .await
        .unwrap_or_else(|e| panic!("first use: {}", describe(&e)));
    assert_eq!(row.get::<_, i64>(0), 1001);
    let logins_before = server_logins(&pg);

    // Churn: 4 clients x 15 rounds, each round a new statement text (query() prepares
    // and closes a named statement every time) and a transaction.
    let churners: Vec<_> = (0..4)
        .map(|c| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut client = tp_connect(&conn).await;
                for i in 0..15 {
                    let sql = format!("SELECT {c} * 100 + $1::int4 AS v_{c}_{i}");
                    let v: i32 = client
                        .query_one(sql.as_str(), &[&i])
                        .await
                        .map_err(|e| format!("churner {c} #{i}: {}", describe(&e)))?
                        .get(0);
                    if v != c * 100 + i {
                        return Err(format!("churner {c} #{i}: got {v}"));
                    }
                    let tx = client.transaction().await.map_err(|e| describe(&e))?;
                    tx.query_one("SELECT txid_current()", &[])
                        .await
                        .map_err(|e| format!("churner {c} tx #{i}: {}", describe(&e)))?;
                    tx.commit().await.map_err(|e| describe(&e))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in churners {
        t.await
            .expect("churner panicked")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let replaced = server_logins(&pg) - logins_before;
    assert!(
        replaced >= 4,
        "only {replaced} new server connections during the churn"
    );

    // The statement still works, alone and inside a transaction.
    for i in 0..10i64 {
        let row = keeper
            .query_one(&stmt, &[&i, &format!("after-{i}")])
            .await
            .unwrap_or_else(|e| panic!("use #{i} after the churn: {}", describe(&e)));
        assert_eq!(row.get::<_, i64>(0), 1000 + i);
        assert_eq!(row.get::<_, String>(1), format!("after-{i}"));
    }
    let tx = keeper.transaction().await.expect("begin");
    for i in 0..5i64 {
        let row = tx
            .query_one(&stmt, &[&i, &"in-tx"])
            .await
            .unwrap_or_else(|e| panic!("use #{i} in a transaction: {}", describe(&e)));
        assert_eq!(row.get::<_, i64>(0), 1000 + i);
    }
    tx.commit().await.expect("commit");
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

// ------------------------------------------------------------------------------ sqlx

/// sqlx: a PgPool with its defaults (statement cache of 100 per connection) shared by 8
/// tasks, each running the same bound queries 15 times, inside and outside transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_pool_with_statement_cache() {
    let (pg, proxy) = start_logged(POOL2);
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
        proxy.port
    );
    let pool = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("sqlx connect: {e}"));
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS sqlx_items; \
         CREATE TABLE sqlx_items (task int, i int, label text, PRIMARY KEY (task, i))",
    )
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("setup: {e}"));

    const TASKS: i32 = 8;
    const ROUNDS: i32 = 15;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    let err = |what: &str| {
                        let what = what.to_owned();
                        move |e: sqlx::Error| format!("task {t} {what} #{i}: {e}")
                    };
                    let (sum, text): (i32, String) =
                        sqlx::query_as("SELECT $1::int4 + $2::int4, $3::text || '?'")
                            .bind(i)
                            .bind(t)
                            .bind(format!("t{t}"))
                            .fetch_one(&pool)
                            .await
                            .map_err(err("select"))?;
                    if sum != i + t || text != format!("t{t}?") {
                        return Err(format!("task {t} #{i}: got ({sum}, {text:?})"));
                    }
                    sqlx::query("INSERT INTO sqlx_items (task, i, label) VALUES ($1, $2, $3)")
                        .bind(t)
                        .bind(i)
                        .bind(format!("l{i}"))
                        .execute(&pool)
                        .await
                        .map_err(err("insert"))?;
                    let mut tx = pool.begin().await.map_err(err("begin"))?;
                    let n: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM sqlx_items WHERE task = $1")
                            .bind(t)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err("count"))?;
                    if n != i64::from(i) + 1 {
                        return Err(format!("task {t} #{i}: count {n}"));
                    }
                    let updated =
                        sqlx::query("UPDATE sqlx_items SET label = $1 WHERE task = $2 AND i = $3")
                            .bind(format!("u{i}"))
                            .bind(t)
                            .bind(i)
                            .execute(&mut *tx)
                            .await
                            .map_err(err("update"))?;
                    if updated.rows_affected() != 1 {
                        return Err(format!("task {t} #{i}: updated {updated:?}"));
                    }
                    tx.commit().await.map_err(err("commit"))?;
                }
                Ok::<_, String>(t)
            })
        })
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.expect("sqlx task panicked") {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "sqlx tasks failed:\n{}",
        errors.join("\n")
    );
    pool.close().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM sqlx_items WHERE label LIKE 'u%'"),
        i64::from(TASKS * ROUNDS)
    );
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}
