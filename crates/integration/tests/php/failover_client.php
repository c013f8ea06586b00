<?php
// A PHP client on PDO (pdo_pgsql, libpq) for the failover test
// (crates/integration/tests/php_pdo.rs).
//
// WORKERS processes (forked), each on its own connection through the
// proxy, run ROUNDS rounds of work as a PHP application would, with what
// PDO puts on the wire: native prepared statements (a named Parse and Sync
// of their own when first executed, then Bind, Describe, Execute and Sync),
// closed with a SQL `DEALLOCATE` when the statement object goes away (a new
// statement text every round); transactions as `BEGIN`/`COMMIT` Queries
// with a savepoint (released or rolled back to); COPY FROM STDIN outside a
// transaction (pgsqlCopyFromArray); `SET`; and LISTEN/NOTIFY on a channel
// of the worker's own. Any PDO error is a failure: the failover must not
// reach the application.
//
// Prints "progress <worker> <round>" after each round and, at the end,
// "committed <worker> <rows>" with the rows each worker saw committed. A
// worker done with its rounds waits until standard input ends (the test
// closes it once every session has moved) before its last checks.
//
// Usage: php failover_client.php <port> <password> <workers> <rounds>

function check(bool $ok, string $what): void
{
    if (!$ok) {
        throw new RuntimeException("wrong result: $what");
    }
}

function run(int $port, string $password, int $worker, int $rounds): void
{
    $pdo = new PDO(
        "pgsql:host=127.0.0.1;port=$port;dbname=postgres;sslmode=disable",
        'postgres',
        $password,
        [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_EMULATE_PREPARES => false],
    );
    $channel = "php_worker_$worker";
    $pdo->exec("listen $channel");
    $sent = [];
    $heard = [];
    $listen = function () use ($pdo, $channel, &$heard): void {
        while (($n = $pdo->pgsqlGetNotify(PDO::FETCH_ASSOC, 0)) !== false) {
            if ($n['message'] === $channel) {
                $heard[] = $n['payload'];
            }
        }
    };

    $next = $worker * 1000000;
    $committed = 0;
    $insert = $pdo->prepare('insert into php_rows (id, worker, note) values (?, ?, ?)');
    $count = $pdo->prepare('select count(*) from php_rows where worker = ?');
    $counted = function () use ($count, $worker): int {
        $count->execute([$worker]);
        return (int) $count->fetchColumn();
    };

    for ($n = 0; $n < $rounds; $n++) {
        // Autocommit: an insert, then an update whose statement text is new
        // every round (prepared, run, and deallocated when it goes away).
        $id = ++$next;
        $insert->execute([$id, $worker, "r$n"]);
        check($insert->rowCount() === 1, "insert $id");
        $bump = $pdo->prepare("update php_rows set note = note || '+' where id = ? /* round $n */");
        $bump->execute([$id]);
        check($bump->rowCount() === 1, "update $id");
        $bump = null;
        $committed++;

        if ($n % 4 === 1) {
            // A transaction with a savepoint, kept on rounds 1 mod 8,
            // rolled back to on the others, and a count inside it.
            $keep = $n % 8 === 1;
            $pdo->beginTransaction();
            $insert->execute([++$next, $worker, "t$n"]);
            $pdo->exec('savepoint sp');
            $insert->execute([++$next, $worker, ($keep ? 's' : 'x') . $n]);
            $pdo->exec($keep ? 'release savepoint sp' : 'rollback to savepoint sp');
            $pdo->prepare('select pg_notify(?, ?)')->execute([$channel, "n$n"]);
            $expected = $committed + 1 + ($keep ? 1 : 0);
            $seen = $counted();
            check($seen === $expected, "the transaction sees $seen rows, expected $expected");
            $pdo->commit();
            $sent[] = "n$n";
            $committed = $expected;
        }

        if ($n % 4 === 2) {
            // COPY FROM STDIN outside a transaction.
            $rows = [];
            for ($i = 0; $i < 2; $i++) {
                $rows[] = (++$next) . "\t$worker\ta$n";
            }
            check($pdo->pgsqlCopyFromArray('php_rows', $rows), 'the COPY succeeds');
            $committed += 2;
        }

        if ($n % 4 === 3) {
            $pdo->exec("set application_name = 'php $worker $n'");
            $name = $pdo->query('show application_name')->fetchColumn();
            check($name === "php $worker $n", "application_name is $name");
        }

        $seen = $counted();
        check($seen === $committed, "worker $worker counts $seen rows, expected $committed");
        $listen();
        echo "progress $worker $n\n";
    }
    // Each worker process has the input's end: every session has moved.
    stream_get_contents(STDIN);

    // LISTEN still holds: a notification sent now is heard.
    $pdo->prepare('select pg_notify(?, ?)')->execute([$channel, 'last']);
    for ($i = 0; $i < 100 && !in_array('last', $heard, true); $i++) {
        $n = $pdo->pgsqlGetNotify(PDO::FETCH_ASSOC, 50);
        if ($n !== false && $n['message'] === $channel) {
            $heard[] = $n['payload'];
        }
    }
    check(in_array('last', $heard, true), 'the last notification is heard');
    $heard = array_values(array_diff($heard, ['last']));
    // None twice; none that was not sent. (One sent in the transaction
    // whose commit was answered from the ledger cannot be heard.)
    check(count($heard) === count(array_unique($heard)), 'notifications heard twice: ' . implode(',', $heard));
    check(array_diff($heard, $sent) === [], 'notifications never sent: ' . implode(',', $heard));
    echo "committed $worker $committed\n";
}

[$_, $port, $password, $workers, $rounds] = $argv;
$children = [];
for ($w = 0; $w < (int) $workers; $w++) {
    $pid = pcntl_fork();
    if ($pid === 0) {
        try {
            run((int) $port, $password, $w, (int) $rounds);
            exit(0);
        } catch (Throwable $e) {
            echo "failed $w " . get_class($e) . ': ' . $e->getMessage() . "\n" . $e->getTraceAsString() . "\n";
            exit(1);
        }
    }
    check($pid > 0, 'fork a worker');
    $children[] = $pid;
}
$failed = false;
foreach ($children as $pid) {
    pcntl_waitpid($pid, $status);
    $failed = $failed || !pcntl_wifexited($status) || pcntl_wexitstatus($status) !== 0;
}
exit($failed ? 1 : 0);
