"""An asyncpg client for the failover test (crates/integration/tests/asyncpg.rs).

WORKERS asyncio tasks, each on its own connection through the proxy, run
ROUNDS rounds of work as an asyncio application would, with what asyncpg
puts on the wire: every statement prepared by name (Parse and Describe in
a batch of their own, then Bind and Execute) with a statement cache small
enough that old statements are closed while new ones are prepared, binary
parameters and results, an enum type it looks up in the catalog on first
use, executemany (several Bind/Execute with one Sync, atomic), explicit
prepared statements, transactions with a nested savepoint (released or
rolled back to), a cursor (a named portal read a few rows per Execute),
binary COPY FROM STDIN in a transaction and outside one, simple-protocol statements,
LISTEN/NOTIFY on a channel of the worker's own, and a pool of one
connection that asyncpg resets each time it is given back. Any asyncpg error is a
failure: the failover must not reach the application.

Prints "progress <worker> <round>" after each round and, at the end,
"committed <worker> <rows>" with the rows each worker saw committed. A
worker done with its rounds waits until standard input ends (the test
closes it once every session has moved) before its last checks.

Usage: python3 failover_client.py <port> <password> <workers> <rounds>
"""

import asyncio
import sys
import traceback

import asyncpg


class WrongResult(Exception):
    """A result other than the one PostgreSQL gives."""


def check(ok, what):
    if not ok:
        raise WrongResult(what)


class Rollback(Exception):
    """Rolls a nested transaction back to its savepoint."""


class Worker:
    def __init__(self, conn, worker):
        self.conn = conn
        self.worker = worker
        self.next_id = worker * 1_000_000
        self.committed = 0
        self.sent = []
        self.heard = []
        self.channel = f"apg_worker_{worker}"

    @classmethod
    async def connect(cls, port, password, worker):
        server = dict(
            host="127.0.0.1",
            port=port,
            user="postgres",
            password=password,
            database="postgres",
            ssl=False,
        )
        # A small cache: asyncpg closes the oldest statement when it
        # prepares a new one, which it does every round.
        conn = await asyncpg.connect(**server, statement_cache_size=3)
        self = cls(conn, worker)
        await conn.add_listener(self.channel, self.heard_notification)
        # A pool of one connection, taken for a statement or two each round:
        # asyncpg resets the connection each time it is given back
        # (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
        # ALL;` in one Query).
        self.pool = await asyncpg.create_pool(**server, min_size=1, max_size=1)
        # asyncpg replaces a pooled connection its server closed without a
        # word to the application: through understudy that must not happen.
        self.closed = []
        async with self.pool.acquire() as pooled:
            self.pooled = pooled._con
            pooled._con.add_termination_listener(lambda _c: self.closed.append("pooled"))
        conn.add_termination_listener(lambda _c: self.closed.append("main"))
        return self

    def heard_notification(self, _conn, _pid, channel, payload):
        if channel == self.channel:
            self.heard.append(payload)

    def new_id(self):
        self.next_id += 1
        return self.next_id

    async def count(self):
        return await self.conn.fetchval(
            "select count(*) from apg_rows where worker = $1", self.worker
        )

    async def round(self, n):
        conn = self.conn
        # Autocommit: an insert with an enum parameter, then an update whose
        # statement text is new every round.
        row = self.new_id()
        status = await conn.execute(
            "insert into apg_rows (id, worker, note, mood) values ($1, $2, $3, $4)",
            row,
            self.worker,
            f"r{n}",
            "calm" if n % 2 else "busy",
        )
        check(status == "INSERT 0 1", f"insert {row}: {status}")
        status = await conn.execute(
            f"update apg_rows set note = note || '+' where id = $1 /* round {n} */", row
        )
        check(status == "UPDATE 1", f"update {row}: {status}")
        self.committed += 1

        if n % 4 == 0:
            # Binary COPY FROM STDIN outside a transaction: it commits at
            # its end.
            rows = [(self.new_id(), self.worker, f"a{n}") for _ in range(2)]
            status = await conn.copy_records_to_table(
                "apg_rows", records=rows, columns=["id", "worker", "note"]
            )
            check(status == "COPY 2", f"autocommit COPY: {status}")
            self.committed += 2

        if n % 4 == 1:
            # executemany: Bind/Execute per row, one Sync, all or nothing.
            rows = [(self.new_id(), self.worker, f"m{n}", "calm") for _ in range(3)]
            await conn.executemany(
                "insert into apg_rows (id, worker, note, mood) values ($1, $2, $3, $4)", rows
            )
            self.committed += 3
            # An explicit prepared statement, read in binary.
            stmt = await conn.prepare(
                "select id, note, mood from apg_rows where worker = $1 and note = $2 order by id"
            )
            got = [tuple(r) for r in await stmt.fetch(self.worker, f"m{n}")]
            check(got == [(r[0], r[2], r[3]) for r in rows], f"executemany rows: {got}")

        if n % 4 == 2:
            # A transaction with a nested savepoint, a notification and a
            # cursor read 4 rows per Execute.
            keep = n % 8 == 2
            async with conn.transaction():
                await conn.execute(
                    "insert into apg_rows (id, worker, note) values ($1, $2, $3)",
                    self.new_id(),
                    self.worker,
                    f"t{n}",
                )
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "insert into apg_rows (id, worker, note) values ($1, $2, $3)",
                            self.new_id(),
                            self.worker,
                            ("s" if keep else "x") + str(n),
                        )
                        if not keep:
                            raise Rollback()
                except Rollback:
                    pass
                await conn.execute("select pg_notify($1, $2)", self.channel, f"n{n}")
                ids = []
                async for r in conn.cursor(
                    "select id, note from apg_rows where worker = $1 order by id",
                    self.worker,
                    prefetch=4,
                ):
                    ids.append(r["id"])
                expected = self.committed + 1 + (1 if keep else 0)
                check(ids == sorted(ids), "rows in order")
                check(len(ids) == expected, f"the transaction sees {len(ids)} rows, expected {expected}")
            self.sent.append(f"n{n}")
            self.committed = expected

        if n % 4 == 3:
            # Binary COPY FROM STDIN in a transaction, and a simple-protocol
            # statement (no parameters: one Query message).
            rows = [(self.new_id(), self.worker, f"c{n}") for _ in range(3)]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "apg_rows", records=rows, columns=["id", "worker", "note"]
                )
            self.committed += 3
            await conn.execute(f"set application_name = 'apg {self.worker} {n}'")
            name = await conn.fetchval("show application_name")
            check(name == f"apg {self.worker} {n}", f"application_name is {name!r}")

        counted = await self.count()
        check(counted == self.committed, f"worker {self.worker} counts {counted} rows, expected {self.committed}")
        # The pooled connection: a setting that lasts until it is given back,
        # and a count under it.
        check(not self.closed, f"connections closed by the server: {self.closed}")
        async with self.pool.acquire() as pooled:
            check(pooled._con is self.pooled, "the pool replaced its connection")
            check(
                await pooled.fetchval("show search_path") == '"$user", public',
                "the pool reset the connection's settings",
            )
            await pooled.execute("set search_path = pg_catalog, public")
            counted = await pooled.fetchval(
                "select count(*) from apg_rows where worker = $1", self.worker
            )
            check(counted == self.committed, f"the pooled connection counts {counted} rows")

    async def finish(self):
        check(not self.closed, f"connections closed by the server: {self.closed}")
        # LISTEN still holds: a notification sent now is heard.
        await self.conn.execute("select pg_notify($1, 'last')", self.channel)
        for _ in range(100):
            if "last" in self.heard:
                break
            await asyncio.sleep(0.05)
        check("last" in self.heard, "the last notification is heard")
        self.heard.remove("last")
        # None twice; none that was not sent. (One sent in the transaction
        # whose commit was answered from the ledger cannot be heard.)
        check(len(self.heard) == len(set(self.heard)), f"notifications heard twice: {self.heard}")
        check(set(self.heard) <= set(self.sent), f"notifications never sent: {self.heard}")
        await self.pool.close()
        await self.conn.close()


async def run(port, password, worker, rounds, moved):
    try:
        w = await Worker.connect(port, password, worker)
        for n in range(rounds):
            await w.round(n)
            print(f"progress {worker} {n}", flush=True)
        await moved
        await w.finish()
        print(f"committed {worker} {w.committed}", flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - every failure is reported
        print(f"failed {worker} {e!r}", flush=True)
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        return False


async def main():
    port, password, workers, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Ends with standard input, which the test closes once every session
    # has moved.
    moved = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    results = await asyncio.gather(*(run(port, password, w, rounds, moved) for w in range(workers)))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    asyncio.run(main())
