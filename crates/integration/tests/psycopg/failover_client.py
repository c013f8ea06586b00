"""A psycopg 3 client for the failover test (crates/integration/tests/psycopg.rs).

WORKERS threads, each on its own connection through the proxy, run ROUNDS
rounds of work as a Python application would, with what psycopg 3 adds to
the wire: pipeline mode (several statements sent before any result is read,
one Sync at the end), every statement prepared on the server from its first
execution (prepare_threshold=0) with a small cache, so that old statements
are closed while new ones are prepared, executemany with RETURNING, binary
results, transactions with a nested savepoint (released or rolled back to),
a server-side cursor read a few rows per FETCH, COPY FROM STDIN inside a
transaction and outside one, and LISTEN/NOTIFY on a channel of the worker's own. Any psycopg
error is a failure: the failover must not reach the application.

Prints "progress <worker> <round>" after each round and, at the end,
"committed <worker> <rows>" with the rows each worker saw committed. A
worker done with its rounds waits until standard input ends (the test
closes it once every session has moved) before its last checks.

Usage: python3 failover_client.py <port> <password> <workers> <rounds>
"""

import sys
import threading
import traceback

import psycopg


class WrongResult(Exception):
    """A result other than the one PostgreSQL gives."""


OUTPUT = threading.Lock()


def say(line):
    """Prints one line whole: print() from several threads may interleave
    the text of one with the newline of another."""
    with OUTPUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def check(ok, what):
    if not ok:
        raise WrongResult(what)


class Worker:
    def __init__(self, port, password, worker):
        self.worker = worker
        self.conn = psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            password=password,
            dbname="postgres",
            sslmode="disable",
            autocommit=True,
            prepare_threshold=0,
        )
        # A small cache: psycopg closes the oldest statement when it prepares
        # a new one, which it does every round.
        self.conn.prepared_max = 4
        self.next_id = worker * 1_000_000
        self.committed = 0
        self.sent = []
        self.heard = []
        self.conn.add_notify_handler(self.heard_notification)
        self.conn.execute(f"listen py_worker_{worker}")

    def heard_notification(self, notification):
        if notification.channel == f"py_worker_{self.worker}":
            self.heard.append(notification.payload)

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def count(self):
        return self.conn.execute(
            "select count(*) from py_rows where worker = %s", (self.worker,)
        ).fetchone()[0]

    def round(self, n):
        conn = self.conn
        # Autocommit in pipeline mode: an insert, an update whose statement
        # text is new every round (prepared, and an old one closed, in the
        # same pipeline) and a count, all sent before any result is read.
        row = self.new_id()
        with conn.pipeline():
            insert = conn.execute(
                "insert into py_rows (id, worker, note) values (%s, %s, %s)",
                (row, self.worker, f"r{n}"),
            )
            update = conn.execute(
                f"update py_rows set note = note || '+' where id = %s /* round {n} */",
                (row,),
            )
            count = conn.execute(
                "select count(*) from py_rows where worker = %s", (self.worker,)
            )
        check(insert.rowcount == 1, f"insert {row}")
        check(update.rowcount == 1, f"update {row}")
        self.committed += 1
        check(count.fetchone()[0] == self.committed, "count in the pipeline")

        if n % 4 == 0:
            # COPY FROM STDIN outside a transaction: it commits at its end.
            rows = [(self.new_id(), self.worker, f"a{n}") for _ in range(2)]
            with conn.cursor().copy("copy py_rows (id, worker, note) from stdin") as copy:
                for r in rows:
                    copy.write_row(r)
            self.committed += 2

        if n % 4 == 1:
            # executemany with RETURNING: pipelined by psycopg.
            ids = [self.new_id() for _ in range(3)]
            cur = conn.cursor()
            cur.executemany(
                "insert into py_rows (id, worker, note) values (%s, %s, %s) returning id",
                [(i, self.worker, f"m{n}") for i in ids],
                returning=True,
            )
            returned = []
            while True:
                returned.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            check(returned == ids, f"executemany returns {returned}, expected {ids}")
            self.committed += 3

        if n % 4 == 2:
            # A transaction in pipeline mode with a nested savepoint, a
            # notification and a server-side cursor read 4 rows per FETCH.
            with conn.transaction():
                with conn.pipeline():
                    conn.execute(
                        "insert into py_rows (id, worker, note) values (%s, %s, %s)",
                        (self.new_id(), self.worker, f"t{n}"),
                    )
                    with conn.transaction():
                        conn.execute(
                            "insert into py_rows (id, worker, note) values (%s, %s, %s)",
                            (self.new_id(), self.worker, ("s" if n % 8 == 2 else "x") + str(n)),
                        )
                        if n % 8 != 2:
                            raise psycopg.Rollback()
                    conn.execute("select pg_notify(%s, %s)", (f"py_worker_{self.worker}", f"n{n}"))
                self.sent.append(f"n{n}")
                expected = self.committed + 1 + (1 if n % 8 == 2 else 0)
                with conn.cursor(name=f"scan_{self.worker}") as scan:
                    scan.itersize = 4
                    scan.execute(
                        "select id, note from py_rows where worker = %s order by id",
                        (self.worker,),
                    )
                    ids = [r[0] for r in scan]
                check(ids == sorted(ids), "rows in order")
                check(len(ids) == expected, f"the transaction sees {len(ids)} rows, expected {expected}")
            self.committed = expected

        if n % 4 == 3:
            # COPY FROM STDIN in a transaction, then a binary read.
            rows = [(self.new_id(), self.worker, f"c{n}") for _ in range(3)]
            with conn.transaction():
                with conn.cursor().copy("copy py_rows (id, worker, note) from stdin") as copy:
                    for r in rows:
                        copy.write_row(r)
            self.committed += 3
            cur = conn.cursor(binary=True)
            cur.execute(
                "select id, note from py_rows where worker = %s and note = %s order by id",
                (self.worker, f"c{n}"),
            )
            check(cur.fetchall() == [(r[0], r[2]) for r in rows], "copied rows read in binary")

        check(self.count() == self.committed, f"worker {self.worker} counts its rows")

    def finish(self):
        # LISTEN still holds: a notification sent now is heard.
        self.conn.execute("select pg_notify(%s, 'last')", (f"py_worker_{self.worker}",))
        check("last" in self.heard, "the last notification is heard")
        self.heard.remove("last")
        # None twice; none that was not sent. (One sent in the transaction
        # whose commit was answered from the ledger cannot be heard.)
        check(len(self.heard) == len(set(self.heard)), f"notifications heard twice: {self.heard}")
        check(set(self.heard) <= set(self.sent), f"notifications never sent: {self.heard}")
        self.conn.close()


def run(port, password, worker, rounds, failures, moved):
    try:
        w = Worker(port, password, worker)
        for n in range(rounds):
            w.round(n)
            say(f"progress {worker} {n}")
        moved.wait()
        w.finish()
        say(f"committed {worker} {w.committed}")
    except BaseException as e:  # noqa: BLE001 - every failure is reported
        failures.append(e)
        say(f"failed {worker} {e!r}\n{traceback.format_exc()}")


def main():
    port, password, workers, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    failures = []
    # Set when standard input ends, which the test closes once every
    # session has moved.
    moved = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), moved.set()), daemon=True).start()
    threads = [
        threading.Thread(target=run, args=(int(port), password, w, rounds, failures, moved))
        for w in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
