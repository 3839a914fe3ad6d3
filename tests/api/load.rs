//! Many clients at once, bounded in count and time: a create runs while 100 clients list
//! and 20 download the same backup. Every answer is right, every download byte-exact, and
//! the memory budget is back to zero afterwards. (The peak-RSS target lives in the
//! benchmark, `bench/run.py`'s load step, not here.)

use crate::helpers::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_create_with_many_lists_and_downloads_at_once() {
    let app = Arc::new(
        spawn_app_with(Options {
            config: Config {
                memory_budget: 32 << 20,
                ..test_config()
            },
            ..Options::default()
        })
        .await,
    );
    let data = Arc::new(pseudo_random(18 << 20, 21));
    app.put_raw("shared.zip", data.to_vec()).await;
    for i in 0..8 {
        write_file(
            &app.data_dir,
            &format!("media/{i}.bin"),
            &pseudo_random(3 << 20, 40 + i),
        );
    }
    let token = app.file_token().await;
    let run = async {
        let create = {
            let app = app.clone();
            tokio::spawn(async move { app.create(Some("during_load.zip")).await.status() })
        };
        let mut lists = Vec::new();
        for _ in 0..100 {
            let app = app.clone();
            lists.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..3 {
                    let res = app.list().await;
                    assert_eq!(res.status(), 200);
                    let items: serde_json::Value = res.json().await.unwrap();
                    assert!(
                        items
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|b| b["key"] == "shared.zip")
                    );
                    ok += 1;
                }
                ok
            }));
        }
        let mut downloads = Vec::new();
        for _ in 0..20 {
            let (app, data, token) = (app.clone(), data.clone(), token.clone());
            downloads.push(tokio::spawn(async move {
                let res = app
                    .client
                    .get(app.url(&format!("/api/backups/shared.zip?token={token}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let body = res.bytes().await.unwrap();
                assert!(body[..] == data[..], "a download is byte-exact");
            }));
        }
        let mut listed = 0;
        for l in lists {
            listed += l.await.unwrap();
        }
        for d in downloads {
            d.await.unwrap();
        }
        assert_eq!(create.await.unwrap(), 204);
        listed
    };
    let listed = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the load finishes within 3 minutes");
    assert_eq!(listed, 300);
    assert!(app.keys().await.contains(&"during_load.zip".to_string()));
    assert_eq!(
        app.state.budget.in_use_bytes(),
        0,
        "every share was given back"
    );
    assert_eq!(app.pending_uploads().await, 0);
}

/// The budget's bytes in use, sampled every 10 ms until `until` ends; the highest seen.
async fn peak_in_use<F: std::future::Future>(app: &TestApp, until: F) -> (u64, F::Output) {
    tokio::pin!(until);
    let mut peak = 0;
    loop {
        tokio::select! {
            out = &mut until => return (peak, out),
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                peak = peak.max(app.state.budget.in_use_bytes());
            }
        }
    }
}

#[tokio::test]
async fn a_create_counts_its_compression_window_against_the_budget_and_fits_in_a_small_one() {
    let (app, s3) = spawn_app_with_faults().await;
    write_file(&app.data_dir, "big.bin", &pseudo_random(40 << 20, 5));
    for i in 0..50 {
        write_file(
            &app.data_dir,
            &format!("small/{i}.txt"),
            &pseudo_random(9000, i),
        );
    }
    // Slowed parts keep the pipeline full while the budget is sampled.
    s3.delay_parts_ms(150);
    let (peak, res) = peak_in_use(&app, app.create(Some("counted.zip"))).await;
    assert_eq!(res.status(), 204);
    let window = backup_gateway::archive::create::memory_bound();
    assert!(
        peak >= window,
        "the create's window ({window} bytes) was not counted: peak in use {peak}"
    );
    assert!(peak <= app.state.budget.total_bytes());
    assert_eq!(
        app.state.budget.in_use_bytes(),
        0,
        "every share was given back"
    );

    // The smallest budget allowed holds one part and nothing beside it: the create still
    // completes, its window left out rather than waiting for itself.
    s3.delay_parts_ms(0);
    for mib in [8, 16] {
        let small = spawn_app_with(Options {
            in_process_s3: true,
            config: Config {
                memory_budget: mib << 20,
                ..test_config()
            },
            ..Options::default()
        })
        .await;
        write_file(&small.data_dir, "big.bin", &pseudo_random(20 << 20, 6));
        let key = format!("budget-{mib}.zip");
        let res = tokio::time::timeout(Duration::from_secs(60), small.create(Some(&key)))
            .await
            .expect("a create under a small budget completes");
        assert_eq!(res.status(), 204, "{mib} MiB");
        assert_eq!(small.state.budget.in_use_bytes(), 0);
        assert_eq!(small.pending_uploads().await, 0);
    }
}
