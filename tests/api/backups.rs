//! Every Backups API route's success and error cases, on both backends.

use crate::helpers::*;
use crate::on_both_backends;
use serde_json::Value;

const MSG_VALIDATION: &str = "An error occurred while validating the submitted data.";

on_both_backends!(
    create_list_download_delete_round_trip,
    create_without_a_name_uses_pocketbase_default_name,
    create_rejects_bad_and_duplicate_names,
    list_honours_fields,
    upload_stores_a_zip_under_its_file_name_without_path,
    upload_rejects_missing_file_non_zip_and_duplicates,
    download_supports_ranges_and_unknown_keys_are_404,
    large_downloads_and_ranges_are_byte_identical,
    delete_unknown_and_invalid_keys_are_400,
    unicode_and_spaces_in_uploaded_names_round_trip,
);

async fn create_list_download_delete_round_trip(backend: Backend) {
    let app = spawn_app_on(backend).await;
    write_file(&app.data_dir, "data.db", b"sqlite bytes");
    write_file(&app.data_dir, "storage/a/b.txt", b"hello");

    let res = app.create(Some("first.zip")).await;
    assert_eq!(res.status(), 204);

    let res = app.list().await;
    assert_eq!(res.status(), 200);
    let items: Vec<Value> = res.json().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["key"], "first.zip");
    let size = items[0]["size"].as_u64().unwrap();
    assert!(size > 0);
    let modified = items[0]["modified"].as_str().unwrap();
    assert_eq!(
        modified.len(),
        "2023-05-19 16:25:57.542Z".len(),
        "{modified}"
    );
    assert!(modified.ends_with('Z') && modified.as_bytes()[10] == b' ');

    let res = app.download("first.zip").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"first.zip\""
    );
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.headers()["content-length"], size.to_string().as_str());
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size);
    let entries = crate::tree::read_zip(&bytes).await;
    assert_eq!(entries["data.db"].2, b"sqlite bytes");
    assert_eq!(entries["storage/a/b.txt"].2, b"hello");

    assert_eq!(app.delete("first.zip").await.status(), 204);
    assert!(app.keys().await.is_empty());
    assert_eq!(app.pending_uploads().await, 0);
}

async fn create_without_a_name_uses_pocketbase_default_name(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let res = app.create(None).await;
    assert_eq!(res.status(), 204);
    let keys = app.keys().await;
    assert_eq!(keys.len(), 1);
    assert_default_name(&keys[0], "acme");

    // A PocketBase data directory names its backups after its `meta.appName`.
    let conn = rusqlite::Connection::open(app.data_dir.join("data.db")).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE _params (id TEXT PRIMARY KEY, value JSON);
           INSERT INTO _params VALUES ('settings', CAST('{"meta":{"appName":"My Shop"}}' AS BLOB));"#,
    )
    .unwrap();
    drop(conn);
    assert_eq!(app.create(None).await.status(), 204);
    let named: Vec<String> = app
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains("my_shop"))
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_default_name(&named[0], "my_shop");
}

/// `pb_backup_<app>_YYYYMMDDhhmmss.zip`
fn assert_default_name(key: &str, app: &str) {
    let prefix = format!("pb_backup_{app}_");
    assert!(key.starts_with(&prefix) && key.ends_with(".zip"), "{key}");
    let stamp = &key[prefix.len()..key.len() - 4];
    assert_eq!(stamp.len(), 14, "{key}");
    assert!(stamp.bytes().all(|b| b.is_ascii_digit()), "{key}");
}

async fn create_rejects_bad_and_duplicate_names(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for (name, code) in [
        ("Bad Name.zip", "validation_match_invalid"),
        ("a.tar", "validation_match_invalid"),
        ("../a.zip", "validation_match_invalid"),
        ("A.zip", "validation_match_invalid"),
    ] {
        let body = assert_error(app.create(Some(name)).await, 400, MSG_VALIDATION).await;
        assert_eq!(body["data"]["name"]["code"], code, "{name}");
    }
    let long = format!("{}.zip", "a".repeat(150));
    let body = assert_error(app.create(Some(&long)).await, 400, MSG_VALIDATION).await;
    assert_eq!(
        body["data"]["name"]["code"],
        "validation_length_out_of_range"
    );
    assert_eq!(
        body["data"]["name"]["params"],
        serde_json::json!({"max": 150, "min": 1})
    );

    assert_eq!(app.create(Some("dup.zip")).await.status(), 204);
    let body = assert_error(app.create(Some("dup.zip")).await, 400, MSG_VALIDATION).await;
    assert_eq!(
        body["data"]["name"]["code"],
        "validation_backup_name_exists"
    );
    let res = app
        .request(reqwest::Method::POST, "/api/backups")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "An error occurred while loading the submitted data.",
    )
    .await;
    assert_eq!(app.keys().await, vec!["dup.zip"]);
}

async fn list_honours_fields(backend: Backend) {
    let app = spawn_app_on(backend).await;
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let res = app
        .request(reqwest::Method::GET, "/api/backups?fields=key")
        .send()
        .await
        .unwrap();
    let items: Vec<Value> = res.json().await.unwrap();
    assert_eq!(
        items,
        vec![
            serde_json::json!({"key": "a.zip"}),
            serde_json::json!({"key": "b.zip"})
        ]
    );
}

async fn upload_stores_a_zip_under_its_file_name_without_path(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let zip = zip_of(&[("data.db", b"x")]).await;
    let res = app.upload("../../etc/up.zip", zip.clone()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.keys().await, vec!["up.zip"]);
    assert_eq!(app.download_bytes("up.zip").await, zip);
}

async fn upload_rejects_missing_file_non_zip_and_duplicates(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let url = "/api/backups/upload";
    // No file part at all.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let res = app
        .request(reqwest::Method::POST, url)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, MSG_VALIDATION).await;
    assert_eq!(body["data"]["file"]["code"], "validation_required");
    // Not multipart.
    let res = app
        .request(reqwest::Method::POST, url)
        .body("x")
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, MSG_VALIDATION).await;
    assert_eq!(body["data"]["file"]["code"], "validation_required");
    // Not a zip.
    let body = assert_error(
        app.upload("notes.zip", b"hello, not a zip".to_vec()).await,
        400,
        MSG_VALIDATION,
    )
    .await;
    assert_eq!(body["data"]["file"]["code"], "validation_invalid_mime_type");
    let body = assert_error(
        app.upload("empty.zip", Vec::new()).await,
        400,
        MSG_VALIDATION,
    )
    .await;
    assert_eq!(body["data"]["file"]["code"], "validation_invalid_mime_type");
    // Duplicate.
    let zip = zip_of(&[("a", b"1")]).await;
    assert_eq!(app.upload("d.zip", zip.clone()).await.status(), 204);
    let body = assert_error(app.upload("d.zip", zip).await, 400, MSG_VALIDATION).await;
    assert_eq!(
        body["data"]["file"]["code"],
        "validation_backup_name_exists"
    );
    // Hidden names cannot be addressed later, so they are refused.
    let body = assert_error(
        app.upload(".hidden.zip", zip_of(&[("a", b"1")]).await)
            .await,
        400,
        MSG_VALIDATION,
    )
    .await;
    assert_eq!(body["data"]["file"]["code"], "validation_invalid_file_name");
    assert_eq!(app.keys().await, vec!["d.zip"]);
    assert_eq!(app.pending_uploads().await, 0);
    if backend == Backend::Local {
        assert_eq!(app.local_backup_files(), vec!["d.zip"]);
    }
}

async fn download_supports_ranges_and_unknown_keys_are_404(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let zip = zip_of(&[("a", &pseudo_random(10_000, 1))]).await;
    assert_eq!(app.upload("r.zip", zip.clone()).await.status(), 204);
    let token = app.file_token().await;
    let get = |range: &'static str| {
        app.client
            .get(app.url("/api/backups/r.zip"))
            .query(&[("token", token.as_str())])
            .header("Range", range)
            .send()
    };
    let res = get("bytes=0-9").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 0-9/{}", zip.len()).as_str()
    );
    assert_eq!(res.bytes().await.unwrap(), &zip[..10]);
    let res = get("bytes=-5").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), &zip[zip.len() - 5..]);
    let res = get("bytes=100-").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), &zip[100..]);
    let res = get("bytes=999999-").await.unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{}", zip.len()).as_str()
    );

    for key in ["missing.zip", "..%2Fdata.db", ".hidden", "a%2Fb.zip"] {
        let res = app
            .client
            .get(app.url(&format!("/api/backups/{key}")))
            .query(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_error(res, 404, "The requested resource wasn't found.").await;
    }
}

/// Spans over one read chunk (4 MiB) are fetched as parallel ranged reads and reassembled
/// in order: whole downloads and ranges that start and end anywhere.
async fn large_downloads_and_ranges_are_byte_identical(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let data = pseudo_random((13 << 20) + 12_345, 7);
    app.put_raw("large.zip", data.clone()).await;
    assert_eq!(app.download_bytes("large.zip").await, data);
    let token = app.file_token().await;
    let len = data.len();
    for (range, want) in [
        (
            format!("bytes=1000-{}", (9 << 20) + 17),
            1000..(9 << 20) + 18,
        ),
        (format!("bytes={}-", (4 << 20) - 1), (4 << 20) - 1..len),
        (
            format!("bytes=-{}", (8 << 20) + 1),
            len - (8 << 20) - 1..len,
        ),
        ("bytes=0-4194304".to_string(), 0..(4 << 20) + 1),
    ] {
        let res = app
            .client
            .get(app.url("/api/backups/large.zip"))
            .query(&[("token", token.as_str())])
            .header("Range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-length"],
            (want.end - want.start).to_string().as_str()
        );
        assert!(res.bytes().await.unwrap() == data[want.clone()], "{range}");
    }
}

#[tokio::test]
async fn a_store_failing_mid_download_breaks_the_response_instead_of_truncating_it() {
    let (app, s3) = spawn_app_with_faults().await;
    let data = pseudo_random(30 << 20, 8);
    app.put_raw("big.zip", data.clone()).await;
    // The HEAD and the first ranged reads succeed, then every read fails.
    let seen = s3.gets_seen() as i64;
    s3.fail_gets_after(seen + 3);
    let res = app.download("big.zip").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    let err = res
        .bytes()
        .await
        .expect_err("a failed read must break the body, not end it early");
    assert!(err.is_body() || err.is_decode(), "a broken body: {err:?}");
    s3.fail_gets_after(-1);
    assert_eq!(app.download_bytes("big.zip").await, data);
}

#[tokio::test]
async fn a_download_cut_short_by_the_store_is_resumed_from_its_offset() {
    let (app, s3) = spawn_app_with_faults().await;
    // One ranged read (under 4 MiB) and parallel ranged reads (over it).
    for (key, size) in [("small.zip", 3 << 20), ("large.zip", 21 << 20)] {
        let data = pseudo_random(size, 9);
        app.put_raw(key, data.clone()).await;
        s3.cut_after_bytes(100 << 10);
        s3.cut_gets(3);
        assert!(app.download_bytes(key).await == data, "{key}");
        assert!(s3.cut_gets_left() <= 0, "{key}: cut 3 times");
        s3.cut_gets(2);
        let token = app.file_token().await;
        let res = app
            .client
            .get(app.url(&format!("/api/backups/{key}?token={token}")))
            .header("Range", "bytes=1000-2999999")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert!(
            res.bytes().await.unwrap() == data[1000..3_000_000],
            "{key} range"
        );
    }
    // A store that cuts every read: the resumes of the first range are spent before the
    // answer starts, so the client gets an error (a failure after the `200` breaks the
    // body instead: see the next test).
    s3.cut_gets(1_000);
    assert_error(
        app.download("large.zip").await,
        400,
        "Failed to download the backup.",
    )
    .await;
    s3.cut_gets(0);
}

async fn delete_unknown_and_invalid_keys_are_400(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for key in ["missing.zip", "..%2Fdata.db", ".hidden"] {
        let res = app
            .request(reqwest::Method::DELETE, &format!("/api/backups/{key}"))
            .send()
            .await
            .unwrap();
        let body = assert_error(res, 400, "Invalid or already deleted backup file.").await;
        assert!(!body.to_string().contains("/tmp"), "leaks a path: {body}");
    }
}

async fn unicode_and_spaces_in_uploaded_names_round_trip(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let zip = zip_of(&[("x", b"y")]).await;
    for name in ["My Backup (1).zip", "résumé ✓.zip"] {
        assert_eq!(app.upload(name, zip.clone()).await.status(), 204, "{name}");
        let res = app.download(name).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), zip);
        assert_eq!(app.delete(name).await.status(), 204);
    }
    assert!(app.keys().await.is_empty());
}

#[tokio::test]
async fn s3_listings_are_paginated_past_1000_objects() {
    let app = spawn_app().await;
    let client = app.s3_client.clone().unwrap();
    let mut puts = futures::stream::FuturesUnordered::new();
    for i in 0..1005 {
        let (client, bucket) = (client.clone(), app.bucket.clone());
        puts.push(async move {
            client
                .put_object()
                .bucket(bucket)
                .key(format!("backups/k{i:04}.zip"))
                .body(aws_sdk_s3::primitives::ByteStream::from_static(
                    b"PK\x05\x06",
                ))
                .send()
                .await
                .unwrap();
        });
        if puts.len() >= 16 {
            futures::StreamExt::next(&mut puts).await;
        }
    }
    while futures::StreamExt::next(&mut puts).await.is_some() {}
    // An object outside the prefix and one in a nested "folder" are not backups.
    for key in ["elsewhere.zip", "backups/nested/x.zip"] {
        client
            .put_object()
            .bucket(&app.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let keys = app.keys().await;
    assert_eq!(keys.len(), 1005);
    assert_eq!(keys.first().unwrap(), "k0000.zip");
    assert_eq!(keys.last().unwrap(), "k1004.zip");
}

#[tokio::test]
async fn undecodable_paths_and_malformed_queries_get_pocketbase_errors() {
    let app = spawn_local_app().await;
    let token = app.file_token().await;
    let res = app
        .client
        .get(app.url(&format!("/api/backups/%FF%FE.zip?token={token}")))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "The requested resource wasn't found.").await;
    let res = app
        .request(reqwest::Method::DELETE, "/api/backups/%FF.zip")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "Invalid or already deleted backup file.").await;
    let res = app
        .request(reqwest::Method::POST, "/api/backups/%FF.zip/restore")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "Missing or invalid backup file.").await;
    // A repeated token is malformed: no token, so 403 (as PocketBase).
    let res = app
        .client
        .get(app.url(&format!("/api/backups/a.zip?token={token}&token=x")))
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "Insufficient permissions to access the resource.").await;
    let res = app
        .request(reqwest::Method::GET, "/api/backups?fields=key&fields=size")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
