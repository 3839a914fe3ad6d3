//! `/api/settings` as clients use it: the official JS SDK (`tests/js/settings.mjs`), the
//! store switching between local and S3 at run time, settings kept across restarts and
//! pinned by flags, the superuser allowlist behind a trusted proxy, and the first-start
//! superuser.

use crate::helpers::*;
use crate::s3_server::{self, S3Server};
use backup_gateway::settings::Pins;
use reqwest::Method;
use serde_json::{Value, json};

fn s3_config(server: &S3Server, bucket: &str) -> backup_gateway::config::S3Config {
    backup_gateway::config::S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        prefix: String::new(),
        force_path_style: true,
        payload_signing: backup_gateway::config::PayloadSigning::Auto,
        credentials: Some((s3_server::ACCESS_KEY.into(), s3_server::SECRET_KEY.into())),
        read_timeout: std::time::Duration::from_secs(30),
    }
}

/// The keys in `bucket`, read with the S3 client (not through the gateway).
async fn bucket_keys(server: &S3Server, bucket: &str) -> Vec<String> {
    let listed = backup_gateway::storage::s3::S3Store::new(&s3_config(server, bucket))
        .await
        .client()
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

pub async fn s3_bucket(dir: &std::path::Path) -> (S3Server, String) {
    let server = S3Server::start(dir, "127.0.0.1:0").await;
    let bucket = format!("set-{}", backup_gateway::util::fsutil::random_lower(10));
    let config = s3_config(&server, &bucket);
    let store = backup_gateway::storage::s3::S3Store::new(&config).await;
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    (server, bucket)
}

async fn patch(app: &TestApp, body: Value) -> reqwest::Response {
    app.request(Method::PATCH, "/api/settings")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_js_sdk_reads_changes_and_tests_the_settings_and_the_store_follows() {
    let app = spawn_local_app().await;
    let s3_dir = tempfile::tempdir().unwrap();
    let (server, bucket) = s3_bucket(s3_dir.path()).await;
    let endpoint = server.endpoint();
    run_node_script_with(
        "settings.mjs",
        &app,
        &[
            &endpoint,
            &bucket,
            s3_server::ACCESS_KEY,
            s3_server::SECRET_KEY,
        ],
    )
    .await;
    // The S3 backup is in the bucket, the local one in the directory: each store kept its
    // own, and the settings test left nothing behind.
    assert_eq!(bucket_keys(&server, &bucket).await, ["on-s3.zip"]);
    assert_eq!(app.local_backup_files(), ["on-local.zip"]);
}

#[tokio::test]
async fn a_create_running_when_the_store_changes_finishes_on_the_store_it_started_with() {
    let app = spawn_local_app().await;
    let s3_dir = tempfile::tempdir().unwrap();
    let (server, bucket) = s3_bucket(s3_dir.path()).await;
    assert_eq!(
        patch(&app, server.settings_patch(&bucket)).await.status(),
        200
    );
    // Over one 5 MiB part, so that the create ends with a CompleteMultipartUpload, which
    // the server holds until the test lets it through.
    write_file(&app.data_dir, "big.bin", &pseudo_random(7 << 20, 7));
    server.hold_completes(true);
    let create = start_create(&app, "moving.zip");
    wait_until(60, || async { server.completes_seen() == 1 }).await;
    // Back to local storage while the create waits for its completion.
    let res = patch(&app, json!({"backups": {"s3": {"enabled": false}}})).await;
    assert_eq!(res.status(), 200);
    assert!(app.keys().await.is_empty(), "the local store is empty");
    server.hold_completes(false);
    assert_eq!(create.await.unwrap().unwrap(), 204);
    // The archive is whole in the bucket it started in, and nothing went to local storage.
    assert_eq!(bucket_keys(&server, &bucket).await, ["moving.zip"]);
    assert!(app.local_backup_files().is_empty());
    assert_eq!(server.pending_uploads(), 0);
}

#[tokio::test]
async fn settings_survive_a_restart_and_a_pinned_value_cannot_change() {
    let app = spawn_local_app().await;
    let res = patch(
        &app,
        json!({"backups": {"cron": "@daily", "cronMaxKeep": 2}, "superuserIPs": ["127.0.0.1", "::1/128"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    // The file is in the gateway's state, which is never backed up.
    let saved = app.data_dir.join(".backup-gateway/settings.json");
    assert!(saved.is_file());
    let mut config = (*app.state.config).clone();
    let restarted = backup_gateway::AppState::new(config.clone()).await.unwrap();
    let s = restarted.settings.current();
    assert_eq!(s.backups.cron, "@daily");
    assert_eq!(s.backups.cron_max_keep, 2);
    assert_eq!(s.superuser_ips, ["127.0.0.1", "::1/128"]);

    // Now with `--backups-cron "0 4 * * *"`: the flag wins, and the API cannot change it.
    config.pins = Pins {
        cron: Some("0 4 * * *".into()),
        ..Pins::default()
    };
    let pinned = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            pins: config.pins.clone(),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    assert_eq!(pinned.state.settings.current().backups.cron, "0 4 * * *");
    let res = patch(&pinned, json!({"backups": {"cron": "@hourly"}})).await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["backups"]["cron"]["code"],
        "validation_pinned_by_flag"
    );
    assert!(
        body["data"]["backups"]["cron"]["message"]
            .as_str()
            .unwrap()
            .contains("--backups-cron (GATEWAY_BACKUPS_CRON)")
    );
    // Repeating the pinned value (as a dashboard saving the whole section does) is fine.
    let res = patch(
        &pinned,
        json!({"backups": {"cron": "0 4 * * *", "cronMaxKeep": 7}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["backups"]["cronMaxKeep"], 7);
}

#[tokio::test]
async fn superusers_outside_the_allowlist_are_refused_everywhere_behind_a_trusted_proxy() {
    let app = spawn_local_app().await;
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let file_token = app.file_token().await;
    let res = patch(
        &app,
        json!({"trustedProxy": {"headers": ["X-Real-IP"]}, "superuserIPs": ["10.0.0.0/24"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    const NOT_ALLOWED: &str = "You are not allowed to perform this request.";
    // From the socket's address (127.0.0.1): every route with the superuser's token.
    for (method, path) in [
        (Method::GET, "/api/backups"),
        (Method::GET, "/api/health"),
        (Method::GET, "/api/settings"),
        (Method::POST, "/api/files/token"),
        (Method::POST, "/api/collections/_superusers/auth-refresh"),
        (Method::DELETE, "/api/nope"),
    ] {
        let res = app.request(method.clone(), path).send().await.unwrap();
        assert_error(res, 403, NOT_ALLOWED).await;
    }
    // A file token alone (no auth header): PocketBase's download text.
    let res = app
        .client
        .get(app.url(&format!("/api/backups/a.zip?token={file_token}")))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "Insufficient permissions to access the resource.").await;
    // Logging in from outside: the password is right, the address is not.
    let res = app
        .client
        .post(app.url("/api/collections/_superusers/auth-with-password"))
        .json(&json!({"identity": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, NOT_ALLOWED).await;

    // Through the proxy, from inside the subnet (the rightmost address is the proxy's).
    let inside = |rb: reqwest::RequestBuilder| rb.header("X-Real-IP", "203.0.113.9, 10.0.0.7");
    let res = inside(app.request(Method::GET, "/api/backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let health: Value = inside(app.request(Method::GET, "/api/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["data"]["realIP"], "10.0.0.7");
    assert_eq!(health["data"]["possibleProxyHeader"], "X-Real-IP");
    let res = inside(
        app.client
            .get(app.url(&format!("/api/backups/a.zip?token={file_token}"))),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // The leftmost address is the client's own claim: refused unless useLeftmostIP.
    let res = app
        .request(Method::GET, "/api/backups")
        .header("X-Real-IP", "10.0.0.7, 203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_error(res, 403, NOT_ALLOWED).await;
    // Requests without a superuser token are not concerned.
    let res = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // An allowlist that includes the caller lets everything through again.
    let res = inside(app.request(Method::PATCH, "/api/settings"))
        .json(&json!({"superuserIPs": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.list().await.status(), 200);
}

#[tokio::test]
async fn the_first_start_superuser_comes_from_the_environment_and_a_restart_keeps_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = backup_gateway::Config::new(tmp.path().join("pb_data"));
    config.initial_superuser = Some(backup_gateway::config::InitialSuperuser {
        email: "root@example.com".into(),
        password: "first-start-pass".into(),
    });
    let state = backup_gateway::AppState::new(config.clone()).await.unwrap();
    let users = state.tokens.users().current().unwrap();
    let user = users.find_by_email("root@example.com").unwrap().clone();
    assert!(backup_gateway::auth::users::verify_password(
        &user,
        "first-start-pass"
    ));
    let token = state
        .tokens
        .issue(&user, backup_gateway::auth::TokenType::Auth)
        .unwrap();
    // The same password at the next start changes nothing: tokens stay valid.
    let again = backup_gateway::AppState::new(config).await.unwrap();
    assert!(
        again
            .tokens
            .verify(&token, backup_gateway::auth::TokenType::Auth)
            .is_ok()
    );
}

/// The compose deployment: the real binary configured only by environment variables, the
/// store by `GATEWAY_S3_*`, its credentials from `AWS_*` (the AWS chain). The pinned store
/// works, the other settings change through the API and apply, the store cannot change.
#[tokio::test]
async fn configured_only_by_the_environment_the_other_settings_can_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, bucket) = s3_bucket(&tmp.path().join("s3")).await;
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let env = [
        ("GATEWAY_HTTP", "127.0.0.1:0".to_string()),
        ("GATEWAY_DIR", data_dir.display().to_string()),
        ("GATEWAY_S3_BUCKET", bucket.clone()),
        ("GATEWAY_S3_ENDPOINT", server.endpoint()),
        ("GATEWAY_S3_REGION", "us-east-1".into()),
        ("GATEWAY_S3_FORCE_PATH_STYLE", "true".into()),
        ("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY.into()),
        // No profile files and no instance metadata: the credentials are the variables'.
        ("HOME", tmp.path().display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("GATEWAY_SUPERUSER_EMAIL", EMAIL.into()),
        ("GATEWAY_SUPERUSER_PASSWORD", PASSWORD.into()),
        ("RUST_LOG", "info".into()),
        ("NO_COLOR", "1".into()),
    ];
    let gw = crate::process::GatewayProcess::start_with_env(&env).await;
    let process = &gw;
    let patch = |body: Value| async move {
        process
            .request(Method::PATCH, "/api/settings")
            .await
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let settings = gw.get_json("/api/settings").await;
    assert_eq!(settings["backups"]["s3"]["enabled"], true);
    assert_eq!(settings["backups"]["s3"]["bucket"], bucket.as_str());
    assert_eq!(settings["backups"]["s3"]["accessKey"], "");

    // The schedule, its retention and the allowlist change, and apply.
    let res = patch(json!({"backups": {"cron": "0 3 * * *", "cronMaxKeep": 2},
        "superuserIPs": ["127.0.0.1", "::1"]}))
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let schedule = gw.get_json("/api/gateway/schedule").await;
    assert_eq!(schedule["cron"], "0 3 * * *");
    assert_eq!(schedule["cronMaxKeep"], 2);
    assert_eq!(schedule["next"].as_array().unwrap().len(), 3, "{schedule}");
    // The page saves the store's section as it shows it: no change, accepted.
    let shown = gw.get_json("/api/settings").await["backups"]["s3"].clone();
    let res = patch(json!({"backups": {"s3": shown, "cronMaxKeep": 3}})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // The pinned store cannot change.
    let res = patch(json!({"backups": {"s3": {"bucket": "elsewhere"}}})).await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"],
        json!({"backups": {"s3": {"code": "validation_pinned_by_flag",
            "message": "Set by --s3-bucket (GATEWAY_S3_BUCKET) at start; change it there."}}})
    );

    // The store works with the chain's credentials.
    let res = gw.post("/api/backups", json!({"name": "env.zip"})).await;
    assert_eq!(res.status(), 204);
    assert_eq!(bucket_keys(&server, &bucket).await, ["env.zip"]);

    // The allowlist applies: from 127.0.0.1, outside 10.0.0.0/8, the superuser is refused.
    let token = login(&gw.client, &gw.base).await;
    let res = patch(json!({"superuserIPs": ["10.0.0.0/8"]})).await;
    assert_eq!(res.status(), 200);
    let res = gw
        .client
        .get(format!("{}/api/backups", gw.base))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "You are not allowed to perform this request.").await;
    gw.kill().await;
}
