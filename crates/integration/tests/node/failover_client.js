// A node-postgres client for the failover test (crates/integration/tests/node_postgres.rs).
//
// WORKERS clients, each on its own connection through the proxy, run ROUNDS
// rounds of work as a Node.js application would, with what node-postgres
// puts on the wire: parameterised queries as one unnamed Parse, Bind,
// Describe, Execute and Sync; named prepared statements (`name:`), parsed
// once per connection and bound again later; queries without parameters
// as simple Query messages, several statements in one of them; results in
// binary; transactions with a savepoint (released or rolled back to) that
// read through pg-cursor (an unnamed portal read a few rows per Execute,
// with Flush and no Sync in between); and LISTEN/NOTIFY on a channel of the
// worker's own. Any error is a failure: the failover must not reach the
// application.
//
// Prints "progress <worker> <round>" after each round and, at the end,
// "committed <worker> <rows>" with the rows each worker saw committed. A
// worker done with its rounds waits until standard input ends (the test
// closes it once every session has moved) before its last checks.
//
// Usage: node failover_client.js <port> <password> <workers> <rounds>

'use strict';

const { Client } = require('pg');
const Cursor = require('pg-cursor');

function check(ok, what) {
  if (!ok) {
    throw new Error(`wrong result: ${what}`);
  }
}

function read(cursor, rows) {
  return new Promise((resolve, reject) => {
    cursor.read(rows, (err, got) => (err ? reject(err) : resolve(got)));
  });
}

function close(cursor) {
  return new Promise((resolve, reject) => {
    cursor.close((err) => (err ? reject(err) : resolve()));
  });
}

async function run(port, password, worker, rounds) {
  const client = new Client({
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password,
    database: 'postgres',
    ssl: false,
  });
  // An error event outside a query (a lost connection) is a failure too.
  let lost = null;
  client.on('error', (err) => {
    lost = err;
  });
  await client.connect();
  const channel = `node_worker_${worker}`;
  const sent = [];
  const heard = [];
  client.on('notification', (n) => {
    if (n.channel === channel) {
      heard.push(n.payload);
    }
  });
  await client.query(`listen ${channel}`);

  let nextId = worker * 1000000;
  const newId = () => ++nextId;
  let committed = 0;
  const count = async () => {
    const r = await client.query({
      name: 'count',
      text: 'select count(*)::int as n from node_rows where worker = $1',
      values: [worker],
    });
    return r.rows[0].n;
  };

  for (let n = 0; n < rounds; n++) {
    check(lost === null, `connection lost: ${lost}`);
    // Autocommit: an insert through a named prepared statement, then an
    // update whose text is new every round (unnamed).
    const id = newId();
    let r = await client.query({
      name: 'insert',
      text: 'insert into node_rows (id, worker, note) values ($1, $2, $3)',
      values: [id, worker, `r${n}`],
    });
    check(r.rowCount === 1, `insert ${id}`);
    r = await client.query(`update node_rows set note = note || '+' where id = $1 /* round ${n} */`, [id]);
    check(r.rowCount === 1, `update ${id}`);
    committed += 1;

    if (n % 4 === 1) {
      // Several statements in one simple Query: a transaction of its own.
      const ids = [newId(), newId()];
      const results = await client.query(
        `begin; insert into node_rows (id, worker, note) values (${ids[0]}, ${worker}, 'q${n}'); ` +
          `insert into node_rows (id, worker, note) values (${ids[1]}, ${worker}, 'q${n}'); commit`,
      );
      check(results.length === 4, `four results, not ${results.length}`);
      committed += 2;
      // Read back in binary.
      r = await client.query({
        text: 'select id, note from node_rows where worker = $1 and note = $2 order by id',
        values: [worker, `q${n}`],
        binary: true,
      });
      check(r.rows.length === 2, `binary read finds ${r.rows.length} rows`);
    }

    if (n % 4 === 2) {
      // A transaction with a savepoint, a notification and a cursor.
      const keep = n % 8 === 2;
      await client.query('begin');
      await client.query('insert into node_rows (id, worker, note) values ($1, $2, $3)', [newId(), worker, `t${n}`]);
      await client.query('savepoint s');
      await client.query('insert into node_rows (id, worker, note) values ($1, $2, $3)', [
        newId(),
        worker,
        (keep ? 's' : 'x') + n,
      ]);
      await client.query(keep ? 'release savepoint s' : 'rollback to savepoint s');
      await client.query('select pg_notify($1, $2)', [channel, `n${n}`]);
      const cursor = client.query(
        new Cursor('select id, note from node_rows where worker = $1 order by id', [worker]),
      );
      const ids = [];
      for (;;) {
        const rows = await read(cursor, 4);
        if (rows.length === 0) {
          break;
        }
        for (const row of rows) {
          ids.push(row.id);
        }
      }
      await close(cursor);
      const expected = committed + 1 + (keep ? 1 : 0);
      check(ids.every((v, i) => i === 0 || ids[i - 1] < v), 'rows in order');
      check(ids.length === expected, `the transaction sees ${ids.length} rows, expected ${expected}`);
      await client.query('commit');
      sent.push(`n${n}`);
      committed = expected;
    }

    if (n % 4 === 3) {
      // A setting, and a read of it.
      await client.query(`set application_name = 'node ${worker} ${n}'`);
      r = await client.query('show application_name');
      check(r.rows[0].application_name === `node ${worker} ${n}`, `application_name ${r.rows[0].application_name}`);
    }

    const counted = await count();
    check(counted === committed, `worker ${worker} counts ${counted} rows, expected ${committed}`);
    console.log(`progress ${worker} ${n}`);
  }
  await moved;

  // LISTEN still holds: a notification sent now is heard.
  await client.query("select pg_notify($1, 'last')", [channel]);
  for (let i = 0; i < 100 && !heard.includes('last'); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  check(heard.includes('last'), 'the last notification is heard');
  heard.splice(heard.indexOf('last'), 1);
  // None twice; none that was not sent. (One sent in the transaction whose
  // commit was answered from the ledger cannot be heard.)
  check(new Set(heard).size === heard.length, `notifications heard twice: ${heard}`);
  check(heard.every((h) => sent.includes(h)), `notifications never sent: ${heard}`);
  check(lost === null, `connection lost: ${lost}`);
  await client.end();
  console.log(`committed ${worker} ${committed}`);
}

// Resolved when standard input ends, which the test closes once every
// session has moved.
const moved = new Promise((resolve) => {
  process.stdin.on('end', resolve);
  process.stdin.resume();
});

async function main() {
  const [port, password, workers, rounds] = process.argv.slice(2);
  const runs = [];
  for (let w = 0; w < Number(workers); w++) {
    runs.push(
      run(Number(port), password, w, Number(rounds)).then(
        () => true,
        (err) => {
          console.log(`failed ${w} ${err && err.stack ? err.stack : err}`);
          return false;
        },
      ),
    );
  }
  const results = await Promise.all(runs);
  process.exit(results.every((ok) => ok) ? 0 : 1);
}

main();
