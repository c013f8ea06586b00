//! The proxy answers simple and extended queries like the server does.

use understudy_integration::{render, Harness, BOTH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let simple = client
            .simple_query("select 1 as a, 'x' as b; select generate_series(1,3)")
            .await
            .unwrap();
        let row = client
            .query_one("select $1::int + 1, $2::text || '!'", &[&41i32, &"hi"])
            .await
            .unwrap();
        outputs.push((
            render(&simple),
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
        ));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[1].1, 42);
}
