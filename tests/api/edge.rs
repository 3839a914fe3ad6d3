//! The HTTP edge as clients meet it: refused bodies answered (never a reset) and
//! connections kept usable, over Node's keep-alive pool (`tests/js/refused.mjs`) and at the
//! TCP level.

use crate::helpers::*;
use std::io::{Read, Write};
use std::time::Duration;

#[tokio::test]
async fn refused_bodies_reach_a_node_client_that_keeps_sending() {
    let app = spawn_app_on(Backend::Local).await;
    run_node_script("refused.mjs", &app).await;
}

/// A client that declares 256 MiB, is refused after the first bytes, sends the whole body
/// before it reads (as simple clients do), and then reads the whole `401` and an orderly end
/// of the stream: the gateway kept reading while it sent, instead of resetting.
#[tokio::test]
async fn a_refused_body_past_the_drain_bound_is_answered_and_closed_gracefully() {
    let app = spawn_app_on(Backend::Local).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let (sent, text, end) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let total: usize = 256 << 20;
        let head = format!(
            "POST /api/backups/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: {total}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0;
        while sent < total && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let mut answer = Vec::new();
        let end = stream.read_to_end(&mut answer).map(|_| ());
        (sent, String::from_utf8_lossy(&answer).to_string(), end)
    })
    .await
    .unwrap();
    assert_eq!(sent, 256 << 20, "the whole body was accepted by the peer");
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        text.contains("The request requires valid record authorization token."),
        "{text}"
    );
    end.expect("the connection ends with FIN after the answer, not a reset");
}

/// Refused requests under the drain bound leave their connection usable: the next request
/// on the same keep-alive client is answered.
#[tokio::test]
async fn a_refused_body_under_the_drain_bound_keeps_the_connection() {
    let app = spawn_app_on(Backend::Local).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for _ in 0..5 {
        let res = client
            .post(format!("{}/api/backups", app.base))
            .header("content-type", "application/json")
            .body(vec![b' '; 2 << 20])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers().get("connection").is_none());
        let _ = res.bytes().await;
    }
    let res = client
        .get(app.url("/api/backups"))
        .header("Authorization", app.superuser_token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

const TOO_MANY: &str = "Too Many Requests.";

async fn patch_settings(app: &TestApp, body: serde_json::Value) -> reqwest::Response {
    app.request(reqwest::Method::PATCH, "/api/settings")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn guest_login(app: &TestApp, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/collections/_superusers/auth-with-password"))
        .json(&serde_json::json!({"identity": EMAIL, "password": password}))
        .send()
        .await
        .unwrap()
}

/// On by default with PocketBase's rules: `*:auth` allows 2 logins per 3 s per address,
/// the third answers PocketBase's 429 body (with its security headers).
#[tokio::test]
async fn rate_limits_are_on_by_default_and_the_auth_rule_refuses_a_third_login() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        keep_rate_limits: true,
        ..Options::default()
    })
    .await;
    let settings = app.get_json("/api/settings").await;
    assert_eq!(settings["rateLimits"]["enabled"], true);
    assert_eq!(
        settings["rateLimits"]["rules"][0],
        serde_json::json!({"label": "*:auth", "audience": "", "duration": 3, "maxRequests": 2})
    );
    // Open a fresh 3 s window: the spawn's own login counted in the previous one.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = guest_login(&app, "wrong-password").await;
        let status = res.status().as_u16();
        if status == 429 {
            assert_eq!(
                res.headers().get("x-content-type-options").unwrap(),
                "nosniff"
            );
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(
                body,
                serde_json::json!({"status": 429, "message": TOO_MANY, "data": {}})
            );
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 429),
        "{statuses:?}"
    );
}

/// Method-qualified labels, path prefixes, audiences and excluded addresses, as PocketBase
/// applies them; superusers are never limited; a PATCH starts every counter again.
#[tokio::test]
async fn rate_limit_rules_match_labels_audiences_and_exclusions_like_pocketbase() {
    let app = spawn_local_app().await;
    let res = patch_settings(
        &app,
        serde_json::json!({"rateLimits": {"enabled": true, "rules": [
            {"label": "POST /api/backups", "maxRequests": 1, "duration": 600},
            {"label": "/api/health", "audience": "@auth", "maxRequests": 1, "duration": 600},
            {"label": "GET /api/settings/", "audience": "@guest", "maxRequests": 2, "duration": 600},
            {"label": "/api/", "maxRequests": 1000, "duration": 600},
        ]}}),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let guest = |method: &str, path: &str| {
        app.client
            .request(method.parse().unwrap(), app.url(path))
            .send()
    };
    // The method-qualified label: a guest's second POST is refused before its 401.
    assert_eq!(guest("POST", "/api/backups").await.unwrap().status(), 401);
    assert_error(guest("POST", "/api/backups").await.unwrap(), 429, TOO_MANY).await;
    // Another method on the same path falls to the prefix rule.
    assert_eq!(guest("GET", "/api/backups").await.unwrap().status(), 401);
    // A superuser is never limited.
    for name in ["s1.zip", "s2.zip", "s3.zip"] {
        assert_eq!(app.create(Some(name)).await.status(), 204);
    }
    // `@auth` rules are not for guests.
    for _ in 0..3 {
        assert_eq!(guest("GET", "/api/health").await.unwrap().status(), 200);
    }
    // A method-qualified prefix for guests: `GET /api/settings/` covers `/api/settings`
    // itself (PocketBase matches the path plus `/`) and what is under it.
    assert_eq!(guest("GET", "/api/settings").await.unwrap().status(), 401);
    assert_eq!(guest("GET", "/api/settings/x").await.unwrap().status(), 404);
    assert_error(guest("GET", "/api/settings").await.unwrap(), 429, TOO_MANY).await;

    // Excluded addresses are not counted; the PATCH also started the counters again.
    let res = patch_settings(
        &app,
        serde_json::json!({"rateLimits": {"excludedIPs": ["127.0.0.0/8"]}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    for _ in 0..3 {
        assert_eq!(guest("POST", "/api/backups").await.unwrap().status(), 401);
    }
    // Not excluded any more: the counter counts again.
    let res = patch_settings(&app, serde_json::json!({"rateLimits": {"excludedIPs": []}})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(guest("POST", "/api/backups").await.unwrap().status(), 401);
    assert_error(guest("POST", "/api/backups").await.unwrap(), 429, TOO_MANY).await;
}

/// Rules are validated as PocketBase validates them, and nothing changes on error.
#[tokio::test]
async fn rate_limit_rules_are_validated_like_pocketbase() {
    let app = spawn_local_app().await;
    let res = patch_settings(
        &app,
        serde_json::json!({"rateLimits": {"enabled": true, "rules": [
            {"label": "bad label!", "maxRequests": 0, "duration": -1, "audience": "@everyone"},
        ], "excludedIPs": ["nope"]}}),
    )
    .await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["rateLimits"],
        serde_json::json!({
            "rules": {"0": {
                "label": {"code": "validation_match_invalid", "message": "Must be in a valid format."},
                "maxRequests": {"code": "validation_required", "message": "Cannot be blank."},
                "duration": {"code": "validation_min_greater_equal_than_required", "message": "Must be no less than 1.", "params": {"threshold": 1}},
                "audience": {"code": "validation_in_invalid", "message": "Must be a valid value."},
            }},
            "excludedIPs": {"0": {"code": "validation_invlaid_ip_or_subnet", "message": "Invalid IP or CIDR subnet."}},
        })
    );
    let res = patch_settings(
        &app,
        serde_json::json!({"rateLimits": {"rules": [
            {"label": "/api/", "maxRequests": 1, "duration": 1},
            {"label": "/api/", "maxRequests": 2, "duration": 1},
        ]}}),
    )
    .await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["rateLimits"]["rules"]["1"]["label"]["code"],
        "validation_conflicting_rate_limit_rule"
    );
    let res = patch_settings(
        &app,
        serde_json::json!({"rateLimits": {"enabled": true, "rules": []}}),
    )
    .await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["rateLimits"]["rules"]["code"],
        "validation_required"
    );
    let settings = app.get_json("/api/settings").await;
    assert_eq!(settings["rateLimits"]["rules"].as_array().unwrap().len(), 4);
}

/// `--rate-limits off` pins them: off, and a PATCH that turns them on is refused.
#[tokio::test]
async fn the_rate_limits_flag_pins_them() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            pins: backup_gateway::settings::Pins {
                rate_limits_enabled: Some(false),
                ..Default::default()
            },
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    for _ in 0..4 {
        assert_eq!(guest_login(&app, "wrong-password").await.status(), 400);
    }
    let res = patch_settings(&app, serde_json::json!({"rateLimits": {"enabled": true}})).await;
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["rateLimits"]["enabled"]["code"],
        "validation_pinned_by_flag"
    );
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Proxy headers are believed only from `trustedProxy.sources`: a client that reaches the
/// port directly cannot pass the allowlist by naming an allowed address, the trusted proxy
/// (127.0.0.2 here) can, and an unparsable rightmost value never lets the client's own
/// value (to its left) through.
#[tokio::test]
async fn proxy_headers_count_only_from_trusted_proxies() {
    let app = spawn_local_app().await;
    let res = patch_settings(
        &app,
        serde_json::json!({
            "superuserIPs": ["10.0.0.7"],
            "trustedProxy": {"headers": ["X-Forwarded-For"], "sources": ["127.0.0.2"]},
        }),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let list = |from: &str, header: &'static str| {
        client_from(from)
            .get(app.url("/api/backups"))
            .header("Authorization", app.superuser_token())
            .header("X-Forwarded-For", header)
            .send()
    };
    let forbidden = "You are not allowed to perform this request.";
    // Straight from a client: the header is ignored, the socket's address is refused.
    assert_error(list("127.0.0.1", "10.0.0.7").await.unwrap(), 403, forbidden).await;
    // From the trusted proxy: believed.
    assert_eq!(list("127.0.0.2", "10.0.0.7").await.unwrap().status(), 200);
    // The proxy appended something unparsable: the walk ends there, at the proxy itself.
    assert_error(
        list("127.0.0.2", "10.0.0.7, unknown").await.unwrap(),
        403,
        forbidden,
    )
    .await;
    // The page and the API show the sources.
    let settings = app
        .client
        .get(app.url("/api/settings"))
        .header("Authorization", app.superuser_token())
        .header("X-Forwarded-For", "10.0.0.7");
    let res = client_from("127.0.0.2")
        .execute(settings.build().unwrap())
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["trustedProxy"]["sources"],
        serde_json::json!(["127.0.0.2"])
    );
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The process's umask, read from /proc without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask in /proc/self/status");
    u32::from_str_radix(v.trim(), 8).unwrap()
}

/// Local backups are 0600 in a 0700 directory; every file of the gateway's state is 0600
/// in a 0700 directory; a restore masks the archive's modes with the umask and never makes
/// anything group- or world-writable (an entry at 0666, a directory at 0777).
#[tokio::test]
async fn backups_state_and_restored_files_are_not_open_to_everyone() {
    use crate::rawzip::{RawEntry, raw_zip};
    let app = spawn_local_app().await;
    write_file(&app.data_dir, "data.db", b"live data");
    assert_eq!(app.create(Some("made.zip")).await.status(), 204);
    let archive = raw_zip(&[
        RawEntry::file("data.db", b"restored data"),
        RawEntry {
            unix_mode: 0o100_666,
            ..RawEntry::file("open.txt", b"everyone may write me")
        },
        RawEntry {
            name: b"shared/".to_vec(),
            data: Vec::new(),
            method: 0,
            unix_mode: 0o040_777,
            declared_uncompressed: None,
            crc_override: None,
        },
        RawEntry {
            unix_mode: 0o100_640,
            ..RawEntry::file("shared/inner.txt", b"x")
        },
    ]);
    assert_eq!(app.upload("uploaded.zip", archive).await.status(), 204);
    let backups = app.data_dir.join("backups");
    assert_eq!(mode_of(&backups), 0o700);
    assert_eq!(mode_of(&backups.join("made.zip")), 0o600);
    assert_eq!(mode_of(&backups.join("uploaded.zip")), 0o600);

    assert_eq!(app.restore("uploaded.zip").await.status(), 204);
    app.wait_restored().await;
    let mask = umask() | 0o022;
    assert_eq!(
        std::fs::read(app.data_dir.join("data.db")).unwrap(),
        b"restored data"
    );
    assert_eq!(mode_of(&app.data_dir.join("open.txt")), 0o666 & !mask);
    assert_eq!(mode_of(&app.data_dir.join("shared")), 0o777 & !mask);
    assert_eq!(
        mode_of(&app.data_dir.join("shared/inner.txt")),
        0o640 & !mask
    );

    let state = app.data_dir.join(".backup-gateway");
    assert_eq!(mode_of(&state), 0o700);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            files.push(entry.path());
        }
    }
    let journal = state.join("restore/journal.json");
    files.extend(journal.exists().then_some(journal));
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for must in [
        "state.json",
        "last-create.json",
        "last-upload.json",
        "last-restore.json",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} in {names:?}");
    }
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }
}

/// A restore keeps group or world write permission only where the replaced file had it.
#[tokio::test]
async fn a_restore_keeps_write_for_others_only_where_the_replaced_file_had_it() {
    use crate::rawzip::{RawEntry, raw_zip};
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_local_app().await;
    write_file(&app.data_dir, "data.db", b"live data");
    write_file(&app.data_dir, "team.txt", b"shared on purpose");
    let team = app.data_dir.join("team.txt");
    std::fs::set_permissions(&team, std::fs::Permissions::from_mode(0o664)).unwrap();
    let archive = raw_zip(&[
        RawEntry::file("data.db", b"restored"),
        RawEntry {
            unix_mode: 0o100_666,
            ..RawEntry::file("team.txt", b"back")
        },
    ]);
    assert_eq!(app.upload("b.zip", archive).await.status(), 204);
    assert_eq!(app.restore("b.zip").await.status(), 204);
    app.wait_restored().await;
    assert_eq!(mode_of(&team), 0o666 & !umask() & !0o002);
    assert_eq!(mode_of(&app.data_dir.join("data.db")) & 0o022, 0);
}

/// `serve` refuses a `--backups-dir` that is the data directory, contains it, lies in the
/// gateway's state, or lies inside it only through a link; the default layout starts.
#[tokio::test]
async fn serve_refuses_a_backups_dir_that_would_mix_backups_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&data, tmp.path().join("link")).unwrap();
    let cases = [
        (data.clone(), "is the data directory"),
        (data.join("sub/.."), "is the data directory"),
        (tmp.path().to_path_buf(), "contains the data directory"),
        (data.join(".backup-gateway/b"), "gateway's state directory"),
        (tmp.path().join("link/backups2"), "through a symbolic link"),
    ];
    for (dir, why) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
            .args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(&data)
            .arg("--backups-dir")
            .arg(&dir)
            .env("NO_COLOR", "1")
            .env_remove("GATEWAY_S3_BUCKET")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("serve exits at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: started", dir.display());
        assert!(stderr.contains(why), "{}: {stderr}", dir.display());
        assert!(stderr.contains("--backups-dir"), "{stderr}");
    }
    // The data directory was not turned into a backups directory.
    assert!(!data.join(".tmp-").exists());
}

/// Keys with Unicode format characters (a right-to-left override, a zero-width space)
/// are refused on upload with PocketBase's field error, and in URLs.
#[tokio::test]
async fn keys_with_bidi_or_zero_width_characters_are_refused() {
    let app = spawn_local_app().await;
    let zip = zip_of(&[("data.db", b"x")]).await;
    for name in ["evil\u{202E}piz.zip", "a\u{200B}b.zip", "dir/\u{2066}x.zip"] {
        let res = app.upload(name, zip.clone()).await;
        let body = assert_error(
            res,
            400,
            "An error occurred while validating the submitted data.",
        )
        .await;
        assert_eq!(
            body["data"]["file"]["code"], "validation_invalid_file_name",
            "{name:?}"
        );
    }
    assert!(app.keys().await.is_empty());
    let res = app.delete(&encode("a\u{200B}b.zip")).await;
    assert_eq!(res.status(), 400);
    // A key planted in the store behind the gateway's back is not listed either.
    app.put_raw("plain.zip", zip.clone()).await;
    app.put_raw("pl\u{202E}ain.zip", zip).await;
    assert_eq!(app.keys().await, vec!["plain.zip".to_string()]);
}

/// A body that trickles in (one byte at a time, each within the gap) is cut off at the
/// small-body bound and its connection closed; a body that stops is cut at the gap.
#[tokio::test]
async fn a_trickling_or_stalled_body_is_closed_within_the_bound() {
    let mut opts = Options {
        backend: Backend::Local,
        ..Options::default()
    };
    opts.config.serve_limits = backup_gateway::api::serve::Limits {
        max_connections: 64,
        header_read: Duration::from_secs(30),
        body_gap: Duration::from_secs(2),
        small_body_time: Duration::from_secs(3),
    };
    let app = spawn_app_with(opts).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    for trickle in [true, false] {
        let addr = addr.clone();
        let (took, text) = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let head = "POST /api/collections/_superusers/auth-with-password HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{";
            stream.write_all(head.as_bytes()).unwrap();
            let started = std::time::Instant::now();
            if trickle {
                let mut writer = stream.try_clone().unwrap();
                std::thread::spawn(move || {
                    for _ in 0..150 {
                        std::thread::sleep(Duration::from_millis(500));
                        if writer.write_all(b" ").is_err() {
                            break;
                        }
                    }
                });
            }
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            (started.elapsed(), String::from_utf8_lossy(&answer).to_string())
        })
        .await
        .unwrap();
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "trickle {trickle}: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(
            took < Duration::from_secs(12),
            "trickle {trickle}: closed after {took:?}"
        );
    }
}

/// Past `--max-connections`, a new connection waits for a place and is then answered
/// `503` and closed; once a place is free, requests are served again.
#[tokio::test]
async fn connections_past_the_limit_are_refused_cleanly() {
    let mut opts = Options {
        backend: Backend::Local,
        ..Options::default()
    };
    opts.config.serve_limits = backup_gateway::api::serve::Limits {
        max_connections: 2,
        ..Default::default()
    };
    let app = spawn_app_with(opts).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let ask = |addr: String| {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).to_string()
        })
    };
    // Connections held open until one past the limit is refused (the spawn's client may
    // still hold one of the places with its pooled connection).
    let (held, text) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let mut held = Vec::new();
            loop {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut first = [0u8; 12];
                s.read_exact(&mut first).unwrap();
                if &first == b"HTTP/1.1 200" {
                    held.push(s);
                    assert!(
                        held.len() <= 2,
                        "a third connection was served past the limit of 2"
                    );
                    continue;
                }
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&first),
                    String::from_utf8_lossy(&rest)
                );
                return (held, text);
            }
        }
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Too many open connections"), "{text}");
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        if ask(addr.clone()).await.unwrap().starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
    }
    assert!(served, "served again once places were free");
}

/// The API and the metrics listener close a connection whose request head does not arrive
/// within the header timeout (the metrics listener had none).
#[tokio::test]
async fn both_listeners_close_a_connection_whose_head_never_arrives() {
    let mut opts = Options {
        backend: Backend::Local,
        ..Options::default()
    };
    opts.config.serve_limits = backup_gateway::api::serve::Limits {
        header_read: Duration::from_secs(1),
        ..Default::default()
    };
    let app = spawn_app_with(opts).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap().to_string();
    tokio::spawn(backup_gateway::serve_metrics(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    let api = app.base.trim_start_matches("http://").to_string();
    for addr in [api, metrics] {
        let (took, end) = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let started = std::time::Instant::now();
            let mut rest = Vec::new();
            let end = s.read_to_end(&mut rest);
            (started.elapsed(), end.map_err(|e| e.kind()))
        })
        .await
        .unwrap();
        assert!(
            !matches!(end, Err(std::io::ErrorKind::WouldBlock)),
            "still open after 20 s"
        );
        assert!(took < Duration::from_secs(10), "closed after {took:?}");
    }
}
