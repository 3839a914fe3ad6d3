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
