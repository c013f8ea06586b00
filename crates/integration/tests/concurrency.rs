//! Many sessions at once through one proxy: 200 clients, all connected at
//! the same time, each gets its own backend and its own answers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use understudy_integration::{Harness, Target};

const SESSIONS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sessions_get_their_own_results() {
    let h = Arc::new(Harness::start().await);
    // All sessions are open together from `connected` to `released`.
    let connected = Arc::new(Barrier::new(SESSIONS + 1));
    let queried = Arc::new(Barrier::new(SESSIONS + 1));
    let released = Arc::new(Barrier::new(SESSIONS + 1));
    let mut tasks = Vec::new();
    for id in 0..SESSIONS as i32 {
        let h = Arc::clone(&h);
        let connected = Arc::clone(&connected);
        let queried = Arc::clone(&queried);
        let released = Arc::clone(&released);
        tasks.push(tokio::spawn(async move {
            let client = h.connect(Target::Proxy).await;
            connected.wait().await;
            let mut answers = Vec::new();
            let row = client.query_one("select $1::int", &[&id]).await.unwrap();
            answers.push(row.get::<_, i32>(0));
            let messages = client
                .simple_query(&format!("select {id} * 10; select {id} + 1000"))
                .await
                .unwrap();
            for m in &messages {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    answers.push(r.get(0).unwrap().parse::<i32>().unwrap());
                }
            }
            client
                .batch_execute(&format!("set application_name = 'session-{id}'"))
                .await
                .unwrap();
            let row = client
                .query_one(
                    "select current_setting('application_name'), pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            let name: String = row.get(0);
            let pid: i32 = row.get(1);
            queried.wait().await;
            released.wait().await;
            (id, answers, name, pid)
        }));
    }
    let all_connected = tokio::time::timeout(Duration::from_secs(60), connected.wait()).await;
    assert!(all_connected.is_ok(), "not every session connected");
    assert_eq!(h.proxy.open_sessions(), SESSIONS, "sessions open at once");
    let observer = h.connect(Target::Direct).await;
    let all_queried = tokio::time::timeout(Duration::from_secs(60), queried.wait()).await;
    assert!(
        all_queried.is_ok(),
        "not every session finished its queries"
    );
    let named: i64 = observer
        .query_one(
            "select count(*) from pg_stat_activity where application_name like 'session-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(named, SESSIONS as i64, "backends seen by the server");
    released.wait().await;
    let mut pids = HashSet::new();
    for task in tasks {
        let (id, answers, name, pid) = task.await.unwrap();
        assert_eq!(answers, vec![id, id * 10, id + 1000], "session {id}");
        assert_eq!(name, format!("session-{id}"));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), SESSIONS, "each session has its own backend");
}
