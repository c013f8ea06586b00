//! FunctionCall ('F') messages through the proxy. psql's `\lo_import` and
//! `\lo_export` use libpq's large-object functions, which call `lo_open`,
//! `lowrite`, `loread` … with the fast-path FunctionCall message; a file
//! imported and exported through the proxy must come back byte for byte.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::RngCore;
use understudy_integration::{Harness, Target};

const PSQL: &str = "/usr/bin/psql";

/// Runs one psql meta-command against `target` and returns its stdout.
async fn psql(h: &Harness, target: Target, command: &str) -> String {
    let child = tokio::process::Command::new(PSQL)
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(h.conninfo(target))
        .arg("-c")
        .arg(command)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {PSQL}: {e}"));
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("psql finishes within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "psql {command:?} via {target:?} failed ({}): {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Imports `file` as a large object; returns its oid.
async fn lo_import(h: &Harness, target: Target, file: &Path) -> u32 {
    let out = psql(h, target, &format!("\\lo_import '{}'", file.display())).await;
    // psql prints "lo_import <oid>".
    out.trim()
        .strip_prefix("lo_import ")
        .and_then(|oid| oid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected \\lo_import output: {out:?}"))
}

async fn lo_export(h: &Harness, target: Target, oid: u32, file: &Path) {
    psql(
        h,
        target,
        &format!("\\lo_export {oid} '{}'", file.display()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_large_object_import_export_through_the_proxy() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.bin");
    let mut data = vec![0u8; 3 * 1024 * 1024 + 12345];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&original, &data).unwrap();

    let oid = lo_import(&h, Target::Proxy, &original).await;
    let through_proxy = dir.path().join("through-proxy.bin");
    lo_export(&h, Target::Proxy, oid, &through_proxy).await;
    assert!(
        std::fs::read(&through_proxy).unwrap() == data,
        "exported through the proxy: bytes differ"
    );
    // What the server stored is the file itself.
    let direct = dir.path().join("direct.bin");
    lo_export(&h, Target::Direct, oid, &direct).await;
    assert!(
        std::fs::read(&direct).unwrap() == data,
        "exported directly: bytes differ"
    );

    // And an object imported directly exports the same through the proxy.
    let oid2 = lo_import(&h, Target::Direct, &original).await;
    let back = dir.path().join("back.bin");
    lo_export(&h, Target::Proxy, oid2, &back).await;
    assert!(
        std::fs::read(&back).unwrap() == data,
        "direct import, export through the proxy: bytes differ"
    );

    // The session after fast-path calls still answers queries.
    let client = h.connect(Target::Proxy).await;
    let size: i64 = client
        .query_one(
            "select sum(length(data))::int8 from pg_largeobject where loid = $1",
            &[&oid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(size, data.len() as i64);
}
