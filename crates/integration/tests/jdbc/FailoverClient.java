// A JDBC client for the failover test (crates/integration/tests/jdbc.rs):
// WORKERS threads, each on its own connection through the proxy, run
// ROUNDS rounds of work as an application would, with the PostgreSQL JDBC
// driver's server-side prepared statements from the first execution
// (prepareThreshold=1: a named Parse with its Bind, Execute and Sync in one
// batch), batches (addBatch/executeBatch) and transactions with a savepoint
// (released or rolled back to) that read with a fetch size (a named portal
// read a few rows per Execute), and COPY FROM STDIN outside a transaction
// through the driver's CopyManager. Any
// SQLException is a failure: the failover must not reach the application.
//
// Prints "progress <worker> <round>" after each round and, at the end,
// "committed <worker> <rows>" with the rows each worker saw committed. A
// worker done with its rounds waits until standard input ends (the test
// closes it once every session has moved), then counts its rows once more
// before closing its connection.
//
// Usage: java -cp postgresql.jar:. FailoverClient <port> <password> <workers> <rounds>

import java.io.IOException;
import java.io.StringReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.postgresql.PGConnection;

public class FailoverClient {
    // Open until standard input ends: every session has moved.
    static final CountDownLatch MOVED = new CountDownLatch(1);

    public static void main(String[] args) throws Exception {
        Thread input = new Thread(() -> {
            try {
                while (System.in.read() != -1) {
                    // Nothing is sent; only the end counts.
                }
            } catch (IOException e) {
                // An unreadable input ends as well.
            }
            MOVED.countDown();
        });
        input.setDaemon(true);
        input.start();
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/postgres";
        Properties props = new Properties();
        props.setProperty("user", "postgres");
        props.setProperty("password", args[1]);
        props.setProperty("prepareThreshold", "1");
        props.setProperty("sslmode", "disable");
        int workers = Integer.parseInt(args[2]);
        int rounds = Integer.parseInt(args[3]);
        List<Thread> threads = new ArrayList<>();
        List<Throwable> failures = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            final int worker = w;
            Thread t = new Thread(() -> {
                try {
                    run(url, props, worker, rounds);
                } catch (Throwable e) {
                    synchronized (failures) {
                        failures.add(e);
                    }
                    System.out.println("failed " + worker + " " + e);
                    e.printStackTrace(System.out);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) {
            t.join();
        }
        System.out.flush();
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    static void run(String url, Properties props, int worker, int rounds)
            throws SQLException, IOException {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            int base = worker * 1_000_000;
            int next = 0;
            int committed = 0;
            PreparedStatement insert =
                conn.prepareStatement("insert into jdbc_rows (id, worker, note) values (?, ?, ?)");
            PreparedStatement count =
                conn.prepareStatement("select count(*) from jdbc_rows where worker = ?");
            PreparedStatement scan =
                conn.prepareStatement("select id, note from jdbc_rows where worker = ? order by id");
            for (int round = 0; round < rounds; round++) {
                // Autocommit: one insert, then an update of it.
                int id = base + next++;
                insert.setInt(1, id);
                insert.setInt(2, worker);
                insert.setString(3, "r" + round);
                check(insert.executeUpdate() == 1, "insert " + id);
                // A statement of its own each round, as an application with
                // many statement texts has: the driver prepares it by name in
                // the batch that first runs it, and closes the previous one
                // in a later batch.
                try (PreparedStatement bump = conn.prepareStatement(
                        "update jdbc_rows set note = note || '+' where id = ? /* round " + round + " */")) {
                    bump.setInt(1, id);
                    check(bump.executeUpdate() == 1, "update " + id);
                }
                committed++;
                if (round % 3 == 1) {
                    // A batch: several Bind/Execute with one Sync.
                    for (int i = 0; i < 3; i++) {
                        insert.setInt(1, base + next++);
                        insert.setInt(2, worker);
                        insert.setString(3, "b" + round);
                        insert.addBatch();
                    }
                    for (int n : insert.executeBatch()) {
                        check(n == 1, "batch insert");
                    }
                    committed += 3;
                }
                if (round % 3 == 0) {
                    // COPY FROM STDIN outside a transaction (CopyManager:
                    // a Query, the rows, CopyDone).
                    StringBuilder rows = new StringBuilder();
                    for (int i = 0; i < 2; i++) {
                        rows.append(base + next++).append('\t').append(worker).append("\ta").append(round).append('\n');
                    }
                    long copied = conn.unwrap(PGConnection.class).getCopyAPI().copyIn(
                        "copy jdbc_rows (id, worker, note) from stdin", new StringReader(rows.toString()));
                    check(copied == 2, "copied " + copied + " rows");
                    committed += 2;
                }
                if (round % 3 == 2) {
                    // A transaction that writes and reads its rows with a
                    // fetch size: a named portal, a few rows per Execute.
                    conn.setAutoCommit(false);
                    insert.setInt(1, base + next++);
                    insert.setInt(2, worker);
                    insert.setString(3, "t" + round);
                    check(insert.executeUpdate() == 1, "insert in transaction");
                    // A savepoint around a row kept on even rounds, rolled
                    // back to on odd ones, as nested transactions of an ORM.
                    Savepoint savepoint = conn.setSavepoint();
                    insert.setInt(1, base + next++);
                    insert.setInt(2, worker);
                    insert.setString(3, (round % 2 == 0 ? "s" : "x") + round);
                    check(insert.executeUpdate() == 1, "insert after a savepoint");
                    if (round % 2 == 0) {
                        conn.releaseSavepoint(savepoint);
                        committed++;
                    } else {
                        conn.rollback(savepoint);
                    }
                    scan.setFetchSize(4);
                    scan.setInt(1, worker);
                    int seen = 0;
                    int last = -1;
                    try (ResultSet rs = scan.executeQuery()) {
                        while (rs.next()) {
                            check(rs.getInt(1) > last, "rows in order");
                            last = rs.getInt(1);
                            seen++;
                        }
                    }
                    check(seen == committed + 1, "worker " + worker + " sees " + seen
                        + " rows, expected " + (committed + 1));
                    conn.commit();
                    conn.setAutoCommit(true);
                    committed++;
                }
                count.setInt(1, worker);
                try (ResultSet rs = count.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == committed,
                        "worker " + worker + " counts its rows");
                }
                System.out.println("progress " + worker + " " + round);
            }
            try {
                MOVED.await();
            } catch (InterruptedException e) {
                throw new IllegalStateException("interrupted while waiting for the move", e);
            }
            count.setInt(1, worker);
            try (ResultSet rs = count.executeQuery()) {
                check(rs.next() && rs.getLong(1) == committed,
                    "worker " + worker + " counts its rows after the move");
            }
            System.out.println("committed " + worker + " " + committed);
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("wrong result: " + what);
        }
    }
}
