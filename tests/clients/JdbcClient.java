// The PostgreSQL JDBC driver (pgjdbc) through launch-proxy, with the driver's defaults:
// a PreparedStatement becomes a named server-side statement from its fifth execution on
// (prepareThreshold 5).
//
// Compiled with javac and run by tests/clients.rs:
//   java -cp postgresql.jar:DIR JdbcClient HOST PORT USER PASSWORD DATABASE THREADS
// Each thread uses its own connection and table: PreparedStatements executed 20 times
// with autocommit on and off (committing every other execution), a batch insert, and a
// rolled-back transaction. Exits 1 with a message on the first error or wrong result;
// prints one success line.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;

public class JdbcClient {
    static final int ROUNDS = 20;

    static void check(boolean cond, String msg) {
        if (!cond) {
            throw new IllegalStateException("wrong result: " + msg);
        }
    }

    static void run(String url, Properties props, int n) throws SQLException {
        String table = "jdbc_w" + n;
        try (Connection conn = DriverManager.getConnection(url, props)) {
            int threshold = conn.unwrap(PGConnection.class).getPrepareThreshold();
            check(threshold == 5, "thread " + n + ": prepareThreshold is " + threshold);
            check(conn.getAutoCommit(), "thread " + n + ": autocommit is off by default");
            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE IF EXISTS " + table);
                st.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, label text, qty bigint)");
            }
            String selectSql = "SELECT ?::int * 3 AS n, ?::text || '!' AS s";
            String insertSql = "INSERT INTO " + table + " (id, label, qty) VALUES (?, ?, ?)";
            String countSql = "SELECT count(*), coalesce(sum(qty), 0) FROM " + table + " WHERE id < ?";

            // Autocommit on.
            try (PreparedStatement sel = conn.prepareStatement(selectSql);
                    PreparedStatement ins = conn.prepareStatement(insertSql)) {
                for (int i = 0; i < ROUNDS; i++) {
                    sel.setInt(1, i);
                    sel.setString(2, "v" + i);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next(), "thread " + n + ": select #" + i + " returned no row");
                        check(rs.getInt(1) == i * 3 && rs.getString(2).equals("v" + i + "!"),
                                "thread " + n + ": select #" + i + " returned " + rs.getInt(1) + ", " + rs.getString(2));
                        check(!rs.next(), "thread " + n + ": select #" + i + " returned two rows");
                    }
                    ins.setInt(1, i);
                    ins.setString(2, "a" + i);
                    ins.setLong(3, i);
                    check(ins.executeUpdate() == 1, "thread " + n + ": insert #" + i);
                }
                check(sel.unwrap(PGStatement.class).isUseServerPrepare(),
                        "thread " + n + ": the select was not server-prepared after " + ROUNDS + " executions");
            }

            // Autocommit off: commit every other execution; one transaction rolled back.
            conn.setAutoCommit(false);
            try (PreparedStatement sel = conn.prepareStatement(selectSql);
                    PreparedStatement ins = conn.prepareStatement(insertSql);
                    PreparedStatement cnt = conn.prepareStatement(countSql)) {
                for (int i = ROUNDS; i < 2 * ROUNDS; i++) {
                    sel.setInt(1, i);
                    sel.setString(2, "v" + i);
                    try (ResultSet rs = sel.executeQuery()) {
                        check(rs.next() && rs.getInt(1) == i * 3, "thread " + n + ": select #" + i);
                    }
                    ins.setInt(1, i);
                    ins.setString(2, "b" + i);
                    ins.setLong(3, i);
                    check(ins.executeUpdate() == 1, "thread " + n + ": insert #" + i);
                    cnt.setInt(1, i + 1);
                    try (ResultSet rs = cnt.executeQuery()) {
                        check(rs.next() && rs.getLong(1) == i + 1,
                                "thread " + n + ": count #" + i + " is " + rs.getLong(1));
                    }
                    if (i % 2 == 1) {
                        conn.commit();
                    }
                }
                conn.commit();
                // A transaction that fails and is rolled back.
                ins.setInt(1, 1000);
                ins.setString(2, "gone");
                ins.setLong(3, 0);
                ins.executeUpdate();
                ins.setInt(1, 0);
                ins.setString(2, "duplicate");
                try {
                    ins.executeUpdate();
                    check(false, "thread " + n + ": inserting a duplicate key succeeded");
                } catch (SQLException e) {
                    check("23505".equals(e.getSQLState()), "thread " + n + ": duplicate insert failed with " + e);
                    conn.rollback();
                }
                // Batch insert (one Sync for the whole batch), then commit.
                for (int i = 2 * ROUNDS; i < 2 * ROUNDS + 50; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "batch" + i);
                    ins.setLong(3, i);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                check(counts.length == 50, "thread " + n + ": batch returned " + counts.length + " counts");
                for (int c : counts) {
                    check(c == 1 || c == Statement.SUCCESS_NO_INFO, "thread " + n + ": batch count " + c);
                }
                conn.commit();
                check(ins.unwrap(PGStatement.class).isUseServerPrepare(),
                        "thread " + n + ": the insert was not server-prepared");
                cnt.setInt(1, 1_000_000);
                try (ResultSet rs = cnt.executeQuery()) {
                    long rows = 2 * ROUNDS + 50;
                    check(rs.next() && rs.getLong(1) == rows && rs.getLong(2) == rows * (rows - 1) / 2,
                            "thread " + n + ": table holds " + rs.getLong(1) + " rows, sum " + rs.getLong(2));
                }
                conn.commit();
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: JdbcClient HOST PORT USER PASSWORD DATABASE THREADS");
            System.exit(2);
        }
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4];
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        int threads = Integer.parseInt(args[5]);
        List<Thread> running = new ArrayList<>();
        List<Throwable> errors = new ArrayList<>();
        for (int n = 0; n < threads; n++) {
            final int id = n;
            Thread t = new Thread(() -> {
                try {
                    run(url, props, id);
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                    e.printStackTrace();
                }
            });
            t.start();
            running.add(t);
        }
        for (Thread t : running) {
            t.join();
        }
        if (!errors.isEmpty()) {
            System.err.println("pgjdbc: FAIL: " + errors.get(0));
            System.exit(1);
        }
        System.out.println("pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION + ": OK (" + threads
                + " connections, " + ROUNDS + " executions with autocommit on and off, batch of 50)");
    }
}
