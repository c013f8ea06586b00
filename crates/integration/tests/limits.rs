//! The proxy's limits, each hit on purpose with a raw protocol client while
//! another session goes on undisturbed: idle in transaction
//! (`25P03`, transaction rolled back), pipelined requests (`54000`), message
//! size (`08P01`).

use std::time::Duration;

use bytes::BytesMut;
use understudy_integration::{Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_protocol::frontend::encode_query;
use understudy_testkit::{wait_until, PASSWORD, SUPERUSER};

/// Checks that a well-behaved session through the proxy still gets correct
/// results.
async fn bystander_works(harness: &Harness) {
    let client = harness.connect(Target::Proxy).await;
    let row = client
        .query_one("select sum(x)::int from generate_series(1, 100) x", &[])
        .await
        .expect("a well-behaved session works");
    assert_eq!(row.get::<_, i32>(0), 5050);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_in_a_transaction_is_ended_with_25p03_and_its_transaction_rolled_back() {
    let harness = Harness::start_with(0, |config| {
        config.proxy.idle_in_transaction_timeout_ms = 300;
    })
    .await;
    let direct = harness.connect(Target::Direct).await;
    direct
        .batch_execute("create table idle_t (id int primary key)")
        .await
        .unwrap();
    let port = harness.port(Target::Proxy);

    let (mut idle, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    idle.simple_query("begin").await;
    idle.simple_query("insert into idle_t values (1)").await;
    let error = idle.expect_error().await;
    assert_eq!(error.code, "25P03", "{error}");
    assert!(
        error.message.contains("idle-in-transaction timeout"),
        "{error}"
    );
    assert!(
        idle.closed().await,
        "the connection is closed after the error"
    );

    let released = wait_until(Duration::from_secs(10), || async {
        // The row's lock is gone only once the transaction rolled back.
        direct
            .simple_query("insert into idle_t values (1)")
            .await
            .is_ok()
    })
    .await;
    assert!(released, "the transaction was rolled back, not committed");
    bystander_works(&harness).await;

    // A session idle outside a transaction is left alone.
    let (mut resting, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    resting.simple_query("select 1").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let frames = resting.simple_query("select 2").await;
    assert!(
        frames.iter().any(|f| f.tag == tag::DATA_ROW),
        "an idle session outside a transaction keeps working"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pipelined_requests_end_the_session_with_54000() {
    let harness = Harness::start_with(0, |config| {
        config.proxy.max_pipelined_requests = 50;
    })
    .await;
    let port = harness.port(Target::Proxy);
    let (mut greedy, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut burst = BytesMut::new();
    for _ in 0..500 {
        encode_query("select 1", &mut burst);
    }
    greedy.send(&burst).await;
    let error = loop {
        let frame = greedy
            .read_frame()
            .await
            .expect("an error before the connection closes");
        if frame.tag == tag::ERROR_RESPONSE {
            break understudy_protocol::backend::ErrorFields::parse(&frame.body).unwrap();
        }
    };
    assert_eq!(error.code, "54000", "{error}");
    assert!(error.message.contains("max_pipelined_requests"), "{error}");
    assert!(greedy.closed().await);
    bystander_works(&harness).await;

    // A COPY sends a message per row and reads nothing until its end: the
    // rows are not requests waiting for results.
    harness
        .connect(Target::Direct)
        .await
        .batch_execute("create table copied (id int)")
        .await
        .unwrap();
    let (mut copier, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut copy = BytesMut::new();
    encode_query("copy copied from stdin", &mut copy);
    copier.send(&copy).await;
    copier.expect_frame(tag::COPY_IN_RESPONSE).await;
    let mut rows = BytesMut::new();
    for id in 0..1000 {
        let mut w = understudy_protocol::FrameWriter::tagged(&mut rows, b'd');
        w.bytes(format!("{id}\n").as_bytes());
        w.finish();
    }
    understudy_protocol::FrameWriter::tagged(&mut rows, b'c').finish();
    copier.send(&rows).await;
    let done = copier.expect_frame(tag::COMMAND_COMPLETE).await;
    assert_eq!(&done.body[..], b"COPY 1000\0");

    // Fewer than the limit outstanding at once is fine.
    let (mut polite, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut some = BytesMut::new();
    for _ in 0..20 {
        encode_query("select 1", &mut some);
    }
    polite.send(&some).await;
    let mut ready = 0;
    while ready < 20 {
        let frame = polite.read_frame().await.expect("results");
        assert_ne!(frame.tag, tag::ERROR_RESPONSE);
        if frame.tag == tag::READY_FOR_QUERY {
            ready += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_max_message_bytes_ends_the_session_with_08p01() {
    let harness = Harness::start_with(0, |config| {
        config.proxy.max_message_bytes = 1 << 20;
    })
    .await;
    let port = harness.port(Target::Proxy);
    let (mut big, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut huge = BytesMut::new();
    encode_query(&format!("select '{}'", "x".repeat(2 << 20)), &mut huge);
    big.send(&huge).await;
    let error = big.expect_error().await;
    assert_eq!(error.code, "08P01", "{error}");
    assert!(error.message.contains("exceeds the limit"), "{error}");
    assert!(big.closed().await);
    bystander_works(&harness).await;

    // Under the limit goes through.
    let (mut fine, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let frames = fine
        .simple_query(&format!("select length('{}')", "y".repeat(500 << 10)))
        .await;
    assert!(frames.iter().any(|f| f.tag == tag::DATA_ROW));
}
