//! Superuser auth and token checks on every protected route.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const MSG_401: &str = "The request requires valid record authorization token.";

#[tokio::test]
async fn auth_with_password_returns_a_pocketbase_token_and_record() {
    let app = spawn_local_app().await;
    let res = app
        .client
        .post(app.url("/api/collections/_superusers/auth-with-password"))
        .json(&json!({"identity": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let record = &body["record"];
    assert_eq!(record["collectionName"], "_superusers");
    assert_eq!(record["collectionId"], "pbc_3142635823");
    assert_eq!(record["email"], EMAIL);
    assert_eq!(record["id"].as_str().unwrap().len(), 15);
    let token = body["token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["type"], "auth");
    assert_eq!(claims["collectionId"], "pbc_3142635823");
    assert_eq!(claims["refreshable"], true);
    assert_eq!(claims["id"], record["id"]);
}

#[tokio::test]
async fn wrong_password_unknown_user_and_blank_fields_are_rejected_like_pocketbase() {
    let app = spawn_local_app().await;
    let url = app.url("/api/collections/_superusers/auth-with-password");
    for body in [
        json!({"identity": EMAIL, "password": "wrong-password"}),
        json!({"identity": "nobody@example.com", "password": PASSWORD}),
    ] {
        let res = app.client.post(&url).json(&body).send().await.unwrap();
        assert_error(res, 400, "Failed to authenticate.").await;
    }
    let res = app.client.post(&url).json(&json!({})).send().await.unwrap();
    let body = assert_error(
        res,
        400,
        "An error occurred while validating the submitted data.",
    )
    .await;
    assert_eq!(body["data"]["identity"]["code"], "validation_required");
    assert_eq!(body["data"]["password"]["code"], "validation_required");
    let res = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "An error occurred while loading the submitted data.",
    )
    .await;
}

fn forge(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn bad_tokens(app: &TestApp) -> Vec<(&'static str, String)> {
    let real = app.superuser_token().to_string();
    let parts: Vec<&str> = real.split('.').collect();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut expired = claims.clone();
    expired["exp"] = json!(1);
    vec![
        ("garbage", "garbage".to_string()),
        ("three dots", "a.b.c".to_string()),
        (
            "alg none",
            forge(&json!({"alg": "none", "typ": "JWT"}), &claims, ""),
        ),
        (
            "forged signature",
            forge(&json!({"alg": "HS256", "typ": "JWT"}), &claims, parts[2]).replace(
                parts[1],
                &URL_SAFE_NO_PAD.encode(
                    json!({"collectionId":"pbc_3142635823","exp":9_999_999_999_i64,"id":claims["id"],"refreshable":true,"type":"auth"})
                        .to_string(),
                ),
            ),
        ),
        (
            "expired (re-signed with a wrong key)",
            forge(&json!({"alg": "HS256", "typ": "JWT"}), &expired, parts[2]),
        ),
        ("file token as auth", app.file_token().await),
    ]
}

#[tokio::test]
async fn every_protected_route_refuses_missing_and_bad_tokens_with_401() {
    let app = spawn_local_app().await;
    let routes = [
        ("GET", "/api/backups"),
        ("POST", "/api/backups"),
        ("POST", "/api/backups/upload"),
        ("DELETE", "/api/backups/a.zip"),
        ("POST", "/api/backups/a.zip/restore"),
        ("POST", "/api/files/token"),
        ("POST", "/api/collections/_superusers/auth-refresh"),
    ];
    let mut tokens = vec![("none", String::new())];
    tokens.extend(bad_tokens(&app).await);
    for (method, path) in routes {
        for (what, token) in &tokens {
            let mut req = app.client.request(method.parse().unwrap(), app.url(path));
            if !token.is_empty() {
                req = req.header("Authorization", token);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 401, "{method} {path} with {what}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["message"], MSG_401, "{method} {path} with {what}");
        }
    }
}

#[tokio::test]
async fn download_refuses_auth_tokens_and_bad_file_tokens_with_403() {
    let app = spawn_local_app().await;
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let mut tokens = vec![
        ("none", String::new()),
        ("auth token", app.superuser_token().to_string()),
    ];
    tokens.extend(
        bad_tokens(&app)
            .await
            .into_iter()
            .filter(|(w, _)| *w != "file token as auth"),
    );
    for (what, token) in tokens {
        let res = app
            .client
            .get(app.url("/api/backups/a.zip"))
            .query(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_error(res, 403, "Insufficient permissions to access the resource.").await;
        let _ = what;
    }
}

#[tokio::test]
async fn bearer_prefix_refresh_and_file_token_work() {
    let app = spawn_local_app().await;
    let res = app
        .client
        .get(app.url("/api/backups"))
        .header("Authorization", format!("Bearer {}", app.superuser_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .request(
            reqwest::Method::POST,
            "/api/collections/_superusers/auth-refresh",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["record"]["email"], EMAIL);
    assert!(body["token"].as_str().unwrap().len() > 20);
}

#[tokio::test]
async fn tokens_stop_working_when_the_superuser_changes_password_or_is_deleted() {
    let app = spawn_local_app().await;
    let users = app.state.tokens.users();
    users.upsert(EMAIL, "another-password").unwrap();
    let res = app.list().await;
    assert_error(res, 401, MSG_401).await;
    users.delete(EMAIL).unwrap();
    let res = app
        .client
        .post(app.url("/api/collections/_superusers/auth-with-password"))
        .json(&json!({"identity": EMAIL, "password": "another-password"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "Failed to authenticate.").await;
}

#[tokio::test]
async fn health_is_public_and_unknown_routes_are_json_404s() {
    let app = spawn_local_app().await;
    let res = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 200);
    assert_eq!(body["message"], "API is healthy.");
    // As PocketBase: unknown GET paths hit its static file handler, the rest its router.
    for (method, path, message) in [
        ("GET", "/api/nothing", "File not found."),
        ("GET", "/nothing", "File not found."),
        (
            "PUT",
            "/api/backups",
            "The requested resource wasn't found.",
        ),
        (
            "POST",
            "/api/nothing",
            "The requested resource wasn't found.",
        ),
    ] {
        let res = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_error(res, 404, message).await;
    }
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// A client whose connections come from `ip` (any of 127.0.0.0/8 is on the loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// 400 wrong-password logins, 50 at a time, from 127.0.0.2 against the real binary (rate
/// limits off, so that only the login gate stands in the way): some are refused with
/// PocketBase's 429, the rest answered 400, the process's peak memory stays within the load
/// target, and the real superuser logs in from 127.0.0.1 while the flood is still going.
#[tokio::test]
async fn a_login_flood_is_refused_with_429_and_the_superuser_still_gets_in() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    crate::process::add_superuser(&data_dir);
    let gw = crate::process::GatewayProcess::start(
        &data_dir,
        crate::process::Launch {
            args: vec!["--rate-limits".into(), "off".into()],
            ..Default::default()
        },
    )
    .await;
    let url = format!("{}/api/collections/_superusers/auth-with-password", gw.base);
    // One login first: the base includes one hasher's memory.
    login(&client_from("127.0.0.1"), &gw.base).await;
    let before = peak_rss_mib(gw.pid());

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attacker = client_from("127.0.0.2");
    let flood = {
        let (url, answered) = (url.clone(), answered.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(0..400)
                .map(|i| {
                    let (attacker, url, answered) =
                        (attacker.clone(), url.clone(), answered.clone());
                    async move {
                        let res = attacker
                            .post(&url)
                            .json(&json!({"identity": EMAIL, "password": format!("wrong-{i}")}))
                            .send()
                            .await
                            .unwrap();
                        let status = res.status().as_u16();
                        let body: Value = res.json().await.unwrap();
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (status, body)
                    }
                })
                .buffer_unordered(50)
                .collect::<Vec<_>>()
                .await
        })
    };
    // The superuser, once the flood is under way.
    wait_until(30, || {
        let answered = answered.clone();
        async move { answered.load(std::sync::atomic::Ordering::SeqCst) >= 50 }
    })
    .await;
    let at_start = answered.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let res = client_from("127.0.0.1")
        .post(&url)
        .json(&json!({"identity": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let at_end = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(res.status(), 200, "the superuser logs in during the flood");
    let answers = flood.await.unwrap();
    let peak = peak_rss_mib(gw.pid());
    eprintln!(
        "login flood: peak RSS {before} MiB before, {peak} MiB after; superuser in after {took:?} \
         ({at_start} to {at_end} of 400 flood logins answered meanwhile)"
    );
    assert!(
        at_start < 400,
        "the superuser's login started while the flood was going on"
    );

    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    for (status, body) in &answers {
        match status {
            429 => assert_eq!(
                body,
                &json!({"status": 429, "message": "Too Many Requests.", "data": {}})
            ),
            400 => assert_eq!(body["message"], "Failed to authenticate."),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "no 429 among {} answers", answers.len());
    assert!(
        peak <= 160,
        "peak RSS {peak} MiB over the 160 MiB load target"
    );
}

/// From an address outside `superuserIPs`, a right and a wrong password get the same 403:
/// the allowlist is checked before the password.
#[tokio::test]
async fn a_refused_address_gets_the_same_answer_for_right_and_wrong_passwords() {
    let app = spawn_local_app().await;
    let res = app
        .request(reqwest::Method::PATCH, "/api/settings")
        .json(&json!({"superuserIPs": ["10.1.2.3"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let url = app.url("/api/collections/_superusers/auth-with-password");
    let mut answers = Vec::new();
    for password in [PASSWORD, "wrong-password"] {
        let res = app
            .client
            .post(&url)
            .json(&json!({"identity": EMAIL, "password": password}))
            .send()
            .await
            .unwrap();
        answers.push(assert_error(res, 403, "You are not allowed to perform this request.").await);
    }
    assert_eq!(answers[0], answers[1]);
}
