//! The first run, as PocketBase does it: `serve` with no superuser prints a one-time link
//! (`/_/#/pbinstall/<token>`) whose token creates the first superuser, once, within 30
//! minutes, and opens nothing else.

use crate::helpers::*;
use crate::process::{GatewayProcess, Launch};
use reqwest::Method;
use serde_json::{Value, json};

const ONLY_SUPERUSERS: &str = "Only superusers can perform this action.";

/// `POST /api/collections/_superusers/records` with `token` as the page sends it.
async fn create_with(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/collections/_superusers/records"))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn first_superuser() -> Value {
    json!({"email": EMAIL, "password": PASSWORD, "passwordConfirm": PASSWORD})
}

#[tokio::test]
async fn the_first_run_link_creates_the_first_superuser_once_and_opens_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(tmp.path(), Launch::default()).await;
    let link = gw
        .startup
        .iter()
        .find_map(|l| l.find("http://").map(|i| l[i..].trim().to_string()))
        .unwrap_or_else(|| panic!("no first-run link printed: {:?}", gw.startup));
    let prefix = format!("{}/_/#/pbinstall/", gw.base);
    let token = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link} is not under {prefix}"))
        .to_string();
    assert!(token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()));
    // The page the link opens.
    let page = gw
        .client
        .get(format!("{}/_/", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(r#"id="install-form""#));

    // Any other route refuses the token as the invalid token it is there.
    for (method, path) in [
        (Method::GET, "/api/backups"),
        (Method::POST, "/api/backups"),
        (Method::GET, "/api/settings"),
        (Method::PATCH, "/api/settings"),
        (Method::POST, "/api/files/token"),
        (Method::POST, "/api/collections/_superusers/auth-refresh"),
    ] {
        for auth in [token.clone(), format!("Bearer {token}")] {
            let res = gw
                .client
                .request(method.clone(), format!("{}{path}", gw.base))
                .header("Authorization", auth)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401, "{method} {path}");
        }
    }
    // A wrong token, or none, creates nothing.
    for wrong in ["", "nope", &token[1..], &format!("{token}x")] {
        let res = create_with(&gw.client, &gw.base, wrong, first_superuser()).await;
        assert_error(res, 403, ONLY_SUPERUSERS).await;
    }
    // Invalid fields get PocketBase's errors, and the link still works afterwards.
    let res = create_with(
        &gw.client,
        &gw.base,
        &token,
        json!({"email": "not-an-email", "password": "short", "passwordConfirm": "other"}),
    )
    .await;
    let body = assert_error(res, 400, "Failed to create record.").await;
    assert_eq!(
        body["data"],
        json!({
            "email": {"code": "validation_is_email", "message": "Must be a valid email address."},
            "password": {"code": "validation_min_text_constraint",
                "message": "Must be at least 8 character(s).", "params": {"min": 8}},
            "passwordConfirm": {"code": "validation_values_mismatch", "message": "Values don't match."},
        })
    );

    // The first superuser, then a login with it.
    let res = create_with(&gw.client, &gw.base, &token, first_superuser()).await;
    assert_eq!(res.status(), 200);
    let record: Value = res.json().await.unwrap();
    assert_eq!(record["email"], EMAIL);
    assert_eq!(record["collectionName"], "_superusers");
    let token_of_superuser = login(&gw.client, &gw.base).await;
    assert!(!token_of_superuser.is_empty());
    // Used: refused, also for another email.
    let res = create_with(&gw.client, &gw.base, &token, first_superuser()).await;
    assert_error(res, 403, ONLY_SUPERUSERS).await;
    let other =
        json!({"email": "b@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD});
    let res = create_with(&gw.client, &gw.base, &token, other).await;
    assert_error(res, 403, ONLY_SUPERUSERS).await;
    let users = backup_gateway::auth::users::Users::open(tmp.path()).unwrap();
    assert_eq!(users.current().unwrap().superusers.len(), 1);
    gw.kill().await;

    // With a superuser, the next start prints no link.
    let again = GatewayProcess::start(tmp.path(), Launch::default()).await;
    assert!(
        !again.startup.iter().any(|l| l.contains("pbinstall")),
        "{:?}",
        again.startup
    );
    again.kill().await;
}

/// The gateway with no superuser, on the schedule's clock that the test moves.
async fn first_run_app(
    dir: &std::path::Path,
) -> (
    backup_gateway::AppState,
    String,
    backup_gateway::schedule::ManualClock,
) {
    let mut config = backup_gateway::Config::new(dir.join("pb_data"));
    let (clock, manual) = backup_gateway::schedule::ClockHandle::manual(
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap(),
    );
    config.clock = clock;
    let state = backup_gateway::AppState::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(backup_gateway::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (state, format!("http://{addr}"), manual)
}

fn token_of(link: &str) -> String {
    link.rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn the_first_run_link_expires_after_30_minutes() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, base, clock) = first_run_app(tmp.path()).await;
    let start = state.config.clock.now();
    let link = backup_gateway::auth::installer::first_run_link(&state, base[7..].parse().unwrap())
        .unwrap()
        .expect("a link: no superuser yet");
    assert!(
        link.starts_with(&format!("{base}/_/#/pbinstall/")),
        "{link}"
    );
    let token = token_of(&link);
    let client = reqwest::Client::new();
    // One second before the end it still works (seen by a request that fails validation,
    // which spends nothing).
    clock.set(start + backup_gateway::auth::installer::VALIDITY - time::Duration::SECOND);
    let res = create_with(&client, &base, &token, json!({})).await;
    assert_error(res, 400, "Failed to create record.").await;
    clock.set(start + backup_gateway::auth::installer::VALIDITY);
    let res = create_with(&client, &base, &token, first_superuser()).await;
    assert_error(res, 403, ONLY_SUPERUSERS).await;
    assert!(
        state
            .tokens
            .users()
            .current()
            .unwrap()
            .superusers
            .is_empty()
    );
}

#[tokio::test]
async fn a_superuser_created_another_way_ends_the_first_run_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, base, _clock) = first_run_app(tmp.path()).await;
    let link = backup_gateway::auth::installer::first_run_link(&state, base[7..].parse().unwrap())
        .unwrap()
        .unwrap();
    // `backup-gateway superuser upsert` from another shell, meanwhile.
    state
        .tokens
        .users()
        .upsert("cli@example.com", "cli-password")
        .unwrap();
    let client = reqwest::Client::new();
    let res = create_with(&client, &base, &token_of(&link), first_superuser()).await;
    assert_error(res, 403, ONLY_SUPERUSERS).await;
    let users = state.tokens.users().current().unwrap();
    assert_eq!(users.superusers.len(), 1);
    assert_eq!(users.superusers[0].email, "cli@example.com");
    assert!(
        backup_gateway::auth::installer::first_run_link(&state, base[7..].parse().unwrap())
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_person_creates_the_first_superuser_on_the_install_screen_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, base, _clock) = first_run_app(tmp.path()).await;
    let link = backup_gateway::auth::installer::first_run_link(&state, base[7..].parse().unwrap())
        .unwrap()
        .unwrap();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/puppeteer-core").exists(),
        "run `npm ci --prefix tests/js` (scripts/setup.sh)"
    );
    let out = tokio::process::Command::new("node")
        .arg(js.join("install.mjs"))
        .args([&link, EMAIL, PASSWORD])
        .arg(&shots)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "install.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let users = state.tokens.users().current().unwrap();
    let emails: Vec<&str> = users.superusers.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, [EMAIL]);
    for (i, step) in ["install", "mismatch", "created", "used"]
        .iter()
        .enumerate()
    {
        let shot = shots.join(format!("{:02}-{step}.png", i + 1));
        assert!(shot.is_file(), "no screenshot {}", shot.display());
    }
}
