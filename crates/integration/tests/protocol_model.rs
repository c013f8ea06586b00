//! What a client reads across a failover, compared byte for byte with what
//! PostgreSQL itself answers to the same requests. Each client runs a
//! sequence of exchanges drawn from a fixed seed on a table only it
//! touches: simple queries (reads, writes, several statements, `COPY` in
//! and out), explicit transactions with savepoints, and extended-protocol
//! batches — named and
//! unnamed statements and portals, text and binary parameters and results,
//! `Describe`, `Execute` with a row limit (portals suspended and continued
//! in a later batch), `Close`, `Flush` in the middle of a batch, errors that
//! skip the rest of a batch, slow statements. First every client runs its
//! sequence straight against the primary, which records the reference
//! answers; then the tables are put back, and every client runs the same
//! sequence through the proxy while the primary is killed part way (or a
//! planned switchover moves the sessions). Every message each client reads
//! must be the reference's, whichever exchange the move hit.
//!
//! `PROTOCOL_MODEL_SEED=n` draws other sequences; `PROTOCOL_MODEL_TRACE=1`
//! prints each exchange (and, with `RUST_LOG`, the proxy's log);
//! `PROTOCOL_MODEL_CLIENTS` and `PROTOCOL_MODEL_EXCHANGES` make a run larger.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use understudy_integration::{describe, Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_protocol::frontend::{self, encode_flush, encode_query, encode_sync};
use understudy_protocol::{Frame, FrameWriter};
use understudy_testkit::{PASSWORD, SUPERUSER};

/// Clients and exchanges each (`PROTOCOL_MODEL_CLIENTS` and
/// `PROTOCOL_MODEL_EXCHANGES` change them, for longer hunts by hand).
const CLIENTS: usize = 12;
const EXCHANGES: usize = 60;

fn from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn clients() -> usize {
    from_env("PROTOCOL_MODEL_CLIENTS", CLIENTS)
}

fn exchanges() -> usize {
    from_env("PROTOCOL_MODEL_EXCHANGES", EXCHANGES)
}
/// Rows each client's table starts with (keys `0..ROWS`).
const ROWS: i32 = 8;
/// The sessions are moved once a share of all exchanges between these is
/// done (drawn from the seed).
const MOVE_BETWEEN: (f64, f64) = (0.25, 0.75);
const INT4: i32 = 23;

/// One request and how its answer ends.
enum Exchange {
    /// A simple Query; the answer ends at ReadyForQuery.
    Simple(String),
    /// Extended messages ending with Sync; the answer ends at ReadyForQuery.
    Batch(BytesMut, String),
    /// Extended messages ending with Flush, answered by `answers`
    /// completions (or cut short by an error), then more ending with Sync.
    Flushed {
        first: BytesMut,
        answers: usize,
        rest: BytesMut,
        trace: String,
    },
    /// A `COPY … FROM STDIN` Query, then, once the server asks for it, its
    /// data (CopyData messages and CopyDone); the answer ends at
    /// ReadyForQuery.
    CopyIn { sql: String, data: BytesMut },
}

impl Exchange {
    fn trace(&self) -> &str {
        match self {
            Exchange::Simple(sql) | Exchange::CopyIn { sql, .. } => sql,
            Exchange::Batch(_, trace) | Exchange::Flushed { trace, .. } => trace,
        }
    }
}

/// The statements a client prepares; each takes one `int4` parameter.
fn statements(id: usize) -> [String; 9] {
    [
        format!("select k, v, s from t{id} where k >= $1 order by k"),
        format!("update t{id} set v = v + 1 where k = $1"),
        format!(
            "insert into t{id} values ($1, $1 * 10, 'n' || $1) \
             on conflict (k) do update set v = t{id}.v + 100"
        ),
        format!("delete from t{id} where k = $1"),
        format!("update t{id} set v = v * 2 where k >= $1 returning k, v"),
        format!("select k, v from t{id} cross join pg_sleep(0.01) where k = $1"),
        "select 10 / ($1 - $1)".to_owned(),
        format!("select count(*), sum(v) from t{id} where k < $1"),
        // A result of about 200 kB: a move may cut it in the middle.
        "select g, md5(g::text) from generate_series(1, 5000 + $1) g".to_owned(),
    ]
}

/// What the generator knows of a client's session; it only steers the
/// draw towards requests that do something, the answers decide the rest.
#[derive(Default)]
struct Draw {
    in_transaction: bool,
    /// The next key a COPY adds (above the keys the other statements use).
    next_copied: i32,
    named: Vec<(String, usize)>,
    next_name: usize,
    portals: Vec<String>,
}

fn parse(name: &str, sql: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, frontend::tag::PARSE);
    w.cstr(name).cstr(sql).i16(1).i32(INT4);
    w.finish();
}

fn bind(portal: &str, statement: &str, param: i32, rng: &mut StdRng, out: &mut BytesMut) {
    let binary_param = rng.gen_bool(0.5);
    let binary_results = rng.gen_bool(0.3);
    let mut w = FrameWriter::tagged(out, frontend::tag::BIND);
    w.cstr(portal).cstr(statement);
    w.i16(1).i16(i16::from(binary_param));
    w.i16(1);
    if binary_param {
        w.i32(4).bytes(&param.to_be_bytes());
    } else {
        let text = param.to_string();
        w.i32(text.len() as i32).bytes(text.as_bytes());
    }
    if binary_results {
        w.i16(1).i16(1);
    } else {
        w.i16(0);
    }
    w.finish();
}

fn execute(portal: &str, max_rows: i32, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, frontend::tag::EXECUTE);
    w.cstr(portal).i32(max_rows);
    w.finish();
}

fn describe_message(kind: u8, name: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, frontend::tag::DESCRIBE);
    w.u8(kind).cstr(name);
    w.finish();
}

fn close(kind: u8, name: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, frontend::tag::CLOSE);
    w.u8(kind).cstr(name);
    w.finish();
}

/// Appends Parse (when needed), Bind, maybe Describe, and one or two
/// Executes of one statement; returns how many completions they bring.
fn unit(
    id: usize,
    draw: &mut Draw,
    rng: &mut StdRng,
    out: &mut BytesMut,
    trace: &mut String,
) -> usize {
    let sqls = statements(id);
    let mut answers = 0;
    let statement = if !draw.named.is_empty() && rng.gen_bool(0.4) {
        draw.named[rng.gen_range(0..draw.named.len())].0.clone()
    } else {
        // The division by zero only now and then.
        let which = loop {
            let which = rng.gen_range(0..sqls.len());
            if which != 6 || rng.gen_bool(0.2) {
                break which;
            }
        };
        let name = if rng.gen_bool(0.5) {
            let name = format!("s{}", draw.next_name);
            draw.next_name += 1;
            draw.named.push((name.clone(), which));
            name
        } else {
            String::new()
        };
        parse(&name, &sqls[which], out);
        trace.push_str(&format!(" parse {name:?}={which}"));
        answers += 1;
        name
    };
    let portal = if draw.in_transaction && rng.gen_bool(0.5) {
        let portal = format!("p{}", rng.gen_range(0..3));
        if !draw.portals.contains(&portal) {
            draw.portals.push(portal.clone());
        }
        portal
    } else {
        String::new()
    };
    let param = rng.gen_range(0..ROWS + 2);
    bind(&portal, &statement, param, rng, out);
    answers += 1;
    trace.push_str(&format!(" bind {portal:?}←{statement:?}({param})"));
    if rng.gen_bool(0.3) {
        describe_message(b'P', &portal, out);
        answers += 1;
        trace.push_str(" describe");
    }
    // A second Execute continues a portal the first left suspended (one
    // that ran to completion cannot run again).
    let mut max_rows = [0, 0, 1, 2, 3][rng.gen_range(0..5)];
    for _ in 0..rng.gen_range(1..=2) {
        execute(&portal, max_rows, out);
        answers += 1;
        trace.push_str(&format!(" execute({max_rows})"));
        if max_rows == 0 {
            break;
        }
        max_rows = rng.gen_range(0..3);
    }
    answers
}

/// The next exchange of a client.
fn next_exchange(id: usize, draw: &mut Draw, rng: &mut StdRng) -> Exchange {
    let k = rng.gen_range(0..ROWS + 2);
    match rng.gen_range(0..16) {
        // Inside a transaction block only: an autocommit COPY FROM STDIN
        // commits unstamped, and in flight at a failover gets 08007
        // (docs/failover.md).
        0 if draw.in_transaction && rng.gen_bool(0.5) => {
            // Rows with keys of their own; now and then one that exists, and
            // the COPY fails part way.
            let mut data = BytesMut::new();
            let rows = rng.gen_range(1..=20);
            let clash = rng.gen_bool(0.1).then(|| rng.gen_range(0..rows));
            for row in 0..rows {
                let key = match clash {
                    Some(at) if at == row => rng.gen_range(0..ROWS),
                    _ => {
                        draw.next_copied += 1;
                        1000 + draw.next_copied
                    }
                };
                let mut w = FrameWriter::tagged(&mut data, frontend::tag::COPY_DATA);
                w.bytes(format!("{key}\t{row}\tcopied\n").as_bytes());
                w.finish();
            }
            FrameWriter::tagged(&mut data, frontend::tag::COPY_DONE).finish();
            Exchange::CopyIn {
                sql: format!("copy t{id} (k, v, s) from stdin"),
                data,
            }
        }
        0 => Exchange::Simple(match rng.gen_range(0..7) {
            0 => ";".to_owned(),
            6 => format!("copy (select k, v, s from t{id} order by k) to stdout"),
            1 => format!("select k from t{id} order by k; select 1 / 0; select 2"),
            2 => "select g, md5(g::text) from generate_series(1, 5000) g".to_owned(),
            _ => format!("select k, v, s from t{id} order by k"),
        }),
        1 => Exchange::Simple(match rng.gen_range(0..3) {
            0 => format!("update t{id} set v = v + 7 where k = {k}"),
            1 => format!("insert into t{id} values ({k}, {k}, 'q') on conflict (k) do nothing"),
            _ => format!("delete from t{id} where k = {k}"),
        }),
        2 => Exchange::Simple(format!(
            "update t{id} set s = s || '+' where k <= {k}; select k, s from t{id} order by k"
        )),
        3 | 4 if !draw.in_transaction => {
            draw.in_transaction = true;
            Exchange::Simple("begin".to_owned())
        }
        3 | 4 => {
            let savepoint = format!("sp{}", rng.gen_range(0..3));
            let sql = match rng.gen_range(0..6) {
                0 | 1 => "commit".to_owned(),
                2 => "rollback".to_owned(),
                3 => format!("savepoint {savepoint}"),
                4 => format!("rollback to savepoint {savepoint}"),
                _ => format!("release savepoint {savepoint}"),
            };
            if sql == "commit" || sql == "rollback" {
                draw.in_transaction = false;
                draw.portals.clear();
            }
            Exchange::Simple(sql)
        }
        5 if !draw.in_transaction => {
            Exchange::Simple(format!("set application_name = 'client {id} {k}'"))
        }
        6 if draw.in_transaction && !draw.portals.is_empty() => {
            // Go on with a portal a batch before left suspended.
            let portal = draw.portals[rng.gen_range(0..draw.portals.len())].clone();
            let max_rows = rng.gen_range(0..3);
            let mut out = BytesMut::new();
            execute(&portal, max_rows, &mut out);
            encode_sync(&mut out);
            Exchange::Batch(out, format!("continue {portal:?} execute({max_rows})"))
        }
        7 if !draw.named.is_empty() => {
            let i = rng.gen_range(0..draw.named.len());
            let mut out = BytesMut::new();
            let trace = if rng.gen_bool(0.5) {
                let (name, _) = draw.named.remove(i);
                close(b'S', &name, &mut out);
                format!("close statement {name:?}")
            } else {
                let name = &draw.named[i].0;
                describe_message(b'S', name, &mut out);
                format!("describe statement {name:?}")
            };
            encode_sync(&mut out);
            Exchange::Batch(out, trace)
        }
        8 if draw.in_transaction && !draw.portals.is_empty() => {
            let portal = draw.portals.remove(rng.gen_range(0..draw.portals.len()));
            let mut out = BytesMut::new();
            close(b'P', &portal, &mut out);
            encode_sync(&mut out);
            Exchange::Batch(out, format!("close portal {portal:?}"))
        }
        9 | 10 => {
            let mut first = BytesMut::new();
            let mut trace = "flushed:".to_owned();
            let answers = unit(id, draw, rng, &mut first, &mut trace);
            encode_flush(&mut first);
            trace.push_str(" flush |");
            let mut rest = BytesMut::new();
            unit(id, draw, rng, &mut rest, &mut trace);
            encode_sync(&mut rest);
            Exchange::Flushed {
                first,
                answers,
                rest,
                trace,
            }
        }
        _ => {
            let mut out = BytesMut::new();
            let mut trace = "batch:".to_owned();
            for _ in 0..rng.gen_range(1..=3) {
                unit(id, draw, rng, &mut out, &mut trace);
            }
            encode_sync(&mut out);
            Exchange::Batch(out, trace)
        }
    }
}

/// Every exchange of client `id`, drawn from `seed`.
fn script(id: usize, seed: u64) -> Vec<Exchange> {
    let mut rng = StdRng::seed_from_u64(seed * 1000 + id as u64);
    let mut draw = Draw::default();
    (0..exchanges())
        .map(|_| next_exchange(id, &mut draw, &mut rng))
        .collect()
}

/// The messages a client reads for one exchange.
type Answer = Vec<Frame>;

/// Reads up to and including ReadyForQuery (or to the end of the stream).
async fn read_until_ready(conn: &mut RawConn, answer: &mut Answer) {
    while let Some(frame) = conn.read_frame().await {
        let done = frame.tag == tag::READY_FOR_QUERY;
        answer.push(frame);
        if done {
            return;
        }
    }
}

/// Reads the answers to messages sent before a Flush: `answers`
/// completions, or fewer when an error skips the rest.
async fn read_completions(conn: &mut RawConn, mut answers: usize, answer: &mut Answer) {
    while answers > 0 {
        let Some(frame) = conn.read_frame().await else {
            return;
        };
        let t = frame.tag;
        answer.push(frame);
        match t {
            tag::ERROR_RESPONSE => return,
            tag::PARSE_COMPLETE
            | tag::BIND_COMPLETE
            | tag::CLOSE_COMPLETE
            | tag::NO_DATA
            | tag::ROW_DESCRIPTION
            | tag::COMMAND_COMPLETE
            | tag::PORTAL_SUSPENDED
            | tag::EMPTY_QUERY_RESPONSE => answers -= 1,
            _ => {}
        }
    }
}

async fn run_exchange(conn: &mut RawConn, exchange: &Exchange) -> Answer {
    let mut answer = Vec::new();
    match exchange {
        Exchange::Simple(sql) => {
            let mut out = BytesMut::new();
            encode_query(sql, &mut out);
            conn.send(&out).await;
            read_until_ready(conn, &mut answer).await;
        }
        Exchange::Batch(out, _) => {
            conn.send(out).await;
            read_until_ready(conn, &mut answer).await;
        }
        Exchange::Flushed {
            first,
            answers,
            rest,
            ..
        } => {
            conn.send(first).await;
            read_completions(conn, *answers, &mut answer).await;
            conn.send(rest).await;
            read_until_ready(conn, &mut answer).await;
        }
        Exchange::CopyIn { sql, data } => {
            let mut out = BytesMut::new();
            encode_query(sql, &mut out);
            conn.send(&out).await;
            // The server asks for the data, or refuses the COPY (in a failed
            // transaction) and is ready again.
            while let Some(frame) = conn.read_frame().await {
                let t = frame.tag;
                answer.push(frame);
                match t {
                    tag::COPY_IN_RESPONSE => {
                        conn.send(data).await;
                        read_until_ready(conn, &mut answer).await;
                        break;
                    }
                    tag::READY_FOR_QUERY => break,
                    _ => {}
                }
            }
        }
    }
    answer
}

/// Runs every exchange of `script` on a new connection to `port`,
/// counting each one done in `done`.
async fn run_script(
    port: u16,
    id: usize,
    script: Arc<Vec<Exchange>>,
    done: Arc<AtomicUsize>,
) -> Vec<Answer> {
    let (mut conn, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let trace = std::env::var_os("PROTOCOL_MODEL_TRACE").is_some();
    let mut answers = Vec::new();
    for (i, exchange) in script.iter().enumerate() {
        if trace {
            eprintln!("client {id} exchange {i}: {}", exchange.trace());
        }
        let answer = run_exchange(&mut conn, exchange).await;
        if trace {
            eprintln!("client {id} answer {i}:\n  {}", show(&answer));
        }
        answers.push(answer);
        done.fetch_add(1, Ordering::SeqCst);
    }
    answers
}

fn show(answer: &Answer) -> String {
    answer
        .iter()
        .map(|frame| match frame.tag {
            tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => describe(frame),
            t => format!("{:?} {:?}", t as char, String::from_utf8_lossy(&frame.body)),
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

async fn reset_tables(h: &Harness) {
    let sql: String = (0..clients())
        .map(|id| {
            format!(
                "create table if not exists t{id} (k int primary key, v int not null, s text not null);
                 truncate t{id};
                 insert into t{id} select k, k * 10 + {id}, 'r' || k from generate_series(0, {}) k;",
                ROWS - 1
            )
        })
        .collect();
    h.cluster.connect().await.batch_execute(&sql).await.unwrap();
}

/// How the sessions are moved to the standby part way.
#[derive(Clone, Copy, Debug)]
enum Move {
    /// The primary is killed (`kill -9`).
    Failover,
    /// A planned switchover.
    Switchover,
}

/// Runs every client's script at once on `port`; with `movement`, the
/// sessions are moved once a share of all exchanges drawn from `seed` (see
/// [`MOVE_BETWEEN`]) is done.
async fn run_all(
    h: &mut Harness,
    target: Target,
    seed: u64,
    movement: Option<Move>,
) -> Vec<Vec<Answer>> {
    let done = Arc::new(AtomicUsize::new(0));
    let port = h.port(target);
    let tasks: Vec<_> = (0..clients())
        .map(|id| {
            let script = Arc::new(script(id, seed));
            tokio::spawn(run_script(port, id, script, Arc::clone(&done)))
        })
        .collect();
    if let Some(movement) = movement {
        let share = StdRng::seed_from_u64(seed).gen_range(MOVE_BETWEEN.0..MOVE_BETWEEN.1);
        let at = (clients() as f64 * exchanges() as f64 * share) as usize;
        let reached =
            understudy_testkit::wait_until(understudy_integration::FAILOVER_DEADLINE, || {
                let done = Arc::clone(&done);
                async move { done.load(Ordering::SeqCst) >= at }
            })
            .await;
        assert!(reached, "the clients got {share:.2} of the way");
        match movement {
            Move::Failover => h.fail_over().await,
            Move::Switchover => h.switch_over().await,
        }
        if std::env::var_os("PROTOCOL_MODEL_TRACE").is_some() {
            eprintln!("moved: {movement:?}");
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("a client task"));
    }
    all
}

/// Runs every client's script straight against the primary, then through
/// the proxy with the sessions moved by `movement`, and compares what each
/// client read.
async fn compare(movement: Move) {
    let seed = std::env::var("PROTOCOL_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if std::env::var_os("PROTOCOL_MODEL_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut h = Harness::start_with(1, |_| {}).await;
    reset_tables(&h).await;
    let reference = run_all(&mut h, Target::Direct, seed, None).await;
    reset_tables(&h).await;
    h.wait_replicated().await;
    let moved = run_all(&mut h, Target::Proxy, seed, Some(movement)).await;
    if std::env::var_os("PROTOCOL_MODEL_TRACE").is_some() {
        let log = h.proxy.commit_log();
        eprintln!(
            "re-applied {}, mismatches {}",
            log.reapplied.load(Ordering::Acquire),
            log.reapplied_mismatches.load(Ordering::Acquire)
        );
    }
    for (id, (expected, got)) in reference.iter().zip(&moved).enumerate() {
        let script = script(id, seed);
        for (i, (expected, got)) in expected.iter().zip(got).enumerate() {
            assert!(
                expected == got,
                "seed {seed}, client {id}, exchange {i} ({}):\nPostgreSQL answered\n  {}\nthrough the {movement:?}\n  {}",
                script[i].trace(),
                show(expected),
                show(got)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_reads_what_postgresql_answers_across_a_failover() {
    compare(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_reads_what_postgresql_answers_across_a_switchover() {
    compare(Move::Switchover).await;
}
