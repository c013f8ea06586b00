//! LISTEN/NOTIFY through the proxy: a listener that sits idle (no query in
//! flight) receives a notification as soon as it is sent, with the
//! notifier's backend pid, exactly as when connected directly.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};
use understudy_integration::understudy_testkit::{PASSWORD, SUPERUSER};
use understudy_integration::{Harness, Target, BOTH};

/// How long a notification may take to arrive.
const DEADLINE: Duration = Duration::from_secs(5);

/// A connection whose asynchronous messages are read by a task that
/// forwards every notification.
async fn listener(h: &Harness, target: Target) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = h
        .pg_config(target, SUPERUSER, PASSWORD)
        .connect(NoTls)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

/// The next notification, or a failure after [`DEADLINE`].
async fn next(rx: &mut mpsc::UnboundedReceiver<Notification>, who: &str) -> (i32, String, String) {
    let n = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{who}: no notification within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("{who}: connection ended"));
    (
        n.process_id(),
        n.channel().to_owned(),
        n.payload().to_owned(),
    )
}

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_listener_receives_notify_with_the_notifiers_pid() {
    let h = Harness::start().await;
    let (direct_listener, mut direct_rx) = listener(&h, Target::Direct).await;
    let (proxy_listener, mut proxy_rx) = listener(&h, Target::Proxy).await;
    direct_listener
        .batch_execute("listen events")
        .await
        .unwrap();
    proxy_listener.batch_execute("listen events").await.unwrap();
    // From here on both listeners are idle: nothing is asked of them.
    for target in BOTH {
        let notifier = h.connect(target).await;
        let pid = backend_pid(&notifier).await;
        let payload = format!("from {target:?}: héllo ✓ 🐘");
        notifier
            .execute("select pg_notify('events', $1)", &[&payload])
            .await
            .unwrap();
        let expected = (pid, "events".to_owned(), payload);
        assert_eq!(
            next(&mut proxy_rx, "listener through the proxy").await,
            expected
        );
        assert_eq!(next(&mut direct_rx, "direct listener").await, expected);
    }
    // Notifications sent in one transaction arrive together, in order.
    let notifier = h.connect(Target::Proxy).await;
    let pid = backend_pid(&notifier).await;
    let batch: String = (0..50).map(|i| format!("notify events, 'n{i}';")).collect();
    notifier
        .batch_execute(&format!("begin; {batch} commit"))
        .await
        .unwrap();
    for i in 0..50 {
        let expected = (pid, "events".to_owned(), format!("n{i}"));
        assert_eq!(
            next(&mut proxy_rx, "listener through the proxy").await,
            expected
        );
        assert_eq!(next(&mut direct_rx, "direct listener").await, expected);
    }
    // The listeners still answer queries afterwards.
    assert!(backend_pid(&proxy_listener).await > 0);
    assert!(backend_pid(&direct_listener).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_notification_carries_the_listeners_own_backend_pid() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let (client, mut rx) = listener(&h, target).await;
        let pid = backend_pid(&client).await;
        client
            .batch_execute("listen self_channel; notify self_channel, 'to myself'")
            .await
            .unwrap();
        let got = next(&mut rx, &format!("{target:?}")).await;
        assert_eq!(
            got.0, pid,
            "{target:?}: process id of the notification is pg_backend_pid()"
        );
        outputs.push((got.1, got.2));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(
        outputs[1],
        ("self_channel".to_owned(), "to myself".to_owned())
    );
}
