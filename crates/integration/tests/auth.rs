//! Client authentication through the proxy: passthrough SCRAM and md5, the
//! server's permissions, the errors PostgreSQL itself gives for a wrong
//! password, an unknown user or database, the userlist mode and a trust
//! rule.

use understudy_config::{AuthMethod, AuthMode, HbaRule, Secret, User};
use understudy_integration::{sqlstate, Harness, Target, BOTH};

async fn current_user(
    h: &Harness,
    target: Target,
    user: &str,
    password: &str,
) -> Result<String, String> {
    let client = h
        .connect_as(target, user, password)
        .await
        .map_err(|e| sqlstate(&e))?;
    let row = client
        .query_one("select current_user::text, session_user::text", &[])
        .await
        .map_err(|e| sqlstate(&e))?;
    let (current, session): (String, String) = (row.get(0), row.get(1));
    assert_eq!(current, session);
    Ok(current)
}

/// Connection outcome for `user` on `target`: the SQLSTATE of a refusal.
async fn refusal(h: &Harness, target: Target, user: &str, password: &str) -> String {
    match h.connect_as(target, user, password).await {
        Ok(_) => "connected".to_owned(),
        Err(e) => sqlstate(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passthrough_login_runs_as_the_role() {
    let h = Harness::start().await;
    h.cluster
        .create_role("alice", "alice-pw", "scram-sha-256")
        .await;
    for target in BOTH {
        assert_eq!(
            current_user(&h, target, "alice", "alice-pw").await,
            Ok("alice".to_owned()),
            "{target:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_permissions_apply_through_the_proxy() {
    let h = Harness::start().await;
    h.cluster
        .create_role("alice", "alice-pw", "scram-sha-256")
        .await;
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute(
            "create table secret(v text); insert into secret values ('hidden'); \
             create table shared(v text); insert into shared values ('visible'); \
             grant select on shared to alice",
        )
        .await
        .unwrap();
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect_as(target, "alice", "alice-pw").await.unwrap();
        let denied = client
            .query("select * from secret", &[])
            .await
            .map(|_| ())
            .map_err(|e| sqlstate(&e));
        let denied_write = client
            .execute("insert into shared values ('x')", &[])
            .await
            .map_err(|e| sqlstate(&e));
        let allowed: String = client
            .query_one("select v from shared", &[])
            .await
            .unwrap()
            .get(0);
        outputs.push((denied, denied_write, allowed));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(
        outputs[1],
        (
            Err("42501".to_owned()),
            Err("42501".to_owned()),
            "visible".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_role_logs_in_with_the_proxy_in_md5_mode() {
    let h = Harness::start_with(0, |c| c.auth.method = AuthMethod::Md5).await;
    h.cluster.create_role("mallory", "md5-pw", "md5").await;
    let stored: String = h
        .connect(Target::Direct)
        .await
        .query_one(
            "select rolpassword from pg_authid where rolname = 'mallory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"), "the role has an md5 secret");
    for target in BOTH {
        assert_eq!(
            current_user(&h, target, "mallory", "md5-pw").await,
            Ok("mallory".to_owned()),
            "{target:?}"
        );
        assert_eq!(
            refusal(&h, target, "mallory", "not-it").await,
            "28P01",
            "{target:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_unknown_database_match_direct() {
    let h = Harness::start().await;
    h.cluster
        .create_role("alice", "alice-pw", "scram-sha-256")
        .await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let wrong_password = refusal(&h, target, "alice", "wrong").await;
        let unknown_user = refusal(&h, target, "nobody", "whatever").await;
        let mut config = h.pg_config(target, "alice", "alice-pw");
        config.dbname("no_such_db");
        let unknown_db = match understudy_integration::connect_with(&config).await {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!(
                "{} {}",
                sqlstate(&e),
                e.as_db_error().map(|d| d.message()).unwrap_or_default()
            ),
        };
        outputs.push((wrong_password, unknown_user, unknown_db));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(
        outputs[1],
        (
            "28P01".to_owned(),
            "28P01".to_owned(),
            "3D000 database \"no_such_db\" does not exist".to_owned()
        )
    );
    // The proxy still serves good logins afterwards.
    assert_eq!(
        current_user(&h, Target::Proxy, "alice", "alice-pw").await,
        Ok("alice".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userlist_mode_admits_listed_users_only() {
    let h = Harness::start_with(0, |c| {
        c.auth.mode = AuthMode::Userlist;
        c.users = vec![User {
            name: "bob".to_owned(),
            password: Secret::new("bob-pw"),
        }];
    })
    .await;
    h.cluster
        .create_role("bob", "bob-pw", "scram-sha-256")
        .await;
    h.cluster
        .create_role("carol", "carol-pw", "scram-sha-256")
        .await;
    assert_eq!(
        current_user(&h, Target::Proxy, "bob", "bob-pw").await,
        Ok("bob".to_owned())
    );
    assert_eq!(refusal(&h, Target::Proxy, "bob", "wrong").await, "28P01");
    // carol exists on the server, and could log in there directly, but is not listed.
    assert_eq!(
        current_user(&h, Target::Direct, "carol", "carol-pw").await,
        Ok("carol".to_owned())
    );
    assert_eq!(
        refusal(&h, Target::Proxy, "carol", "carol-pw").await,
        "28P01"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_rule_admits_one_user_without_a_password() {
    let h = Harness::start_with(0, |c| {
        c.users = vec![User {
            name: "dave".to_owned(),
            password: Secret::new("dave-pw"),
        }];
        c.auth.hba = vec![HbaRule {
            user: Some("dave".to_owned()),
            database: None,
            address: None,
            method: AuthMethod::Trust,
        }];
    })
    .await;
    h.cluster
        .create_role("dave", "dave-pw", "scram-sha-256")
        .await;
    h.cluster
        .create_role("erin", "erin-pw", "scram-sha-256")
        .await;
    // dave is trusted: any password, or none, is fine.
    assert_eq!(
        current_user(&h, Target::Proxy, "dave", "not-his-password").await,
        Ok("dave".to_owned())
    );
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(h.port(Target::Proxy))
        .user("dave")
        .dbname("postgres");
    let client = understudy_integration::connect_with(&config)
        .await
        .expect("no password needed");
    let user: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "dave");
    // The server itself still wants dave's password.
    assert_eq!(
        refusal(&h, Target::Direct, "dave", "not-his-password").await,
        "28P01"
    );
    // The rule is for dave only.
    assert_eq!(
        refusal(&h, Target::Proxy, "erin", "not-her-password").await,
        "28P01"
    );
    assert_eq!(
        current_user(&h, Target::Proxy, "erin", "erin-pw").await,
        Ok("erin".to_owned())
    );
}
