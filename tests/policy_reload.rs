//! Policy hot reload the way Kubernetes updates a mounted ConfigMap: `policy.yaml` is a symlink
//! into `..data`, itself a symlink swapped atomically to a new timestamped directory. Under
//! steady load, 20 swaps fail no request; an invalid swap keeps the running policy.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{ClientOptions, Era, connect, tool_call};
use common::keys::write_keys;
use common::sentinel::{self, TempDir};
use common::upstream::spawn_upstream;
use serde_json::json;

const KEY: &str = "ak_reload_0123456789";

/// A policy version: echo always allowed; `add` allowed in even versions only.
fn policy(version: usize) -> String {
    let add = if version.is_multiple_of(2) {
        "allow"
    } else {
        "deny"
    };
    format!(
        "# version {version}\ndefault: deny\nrules:\n  - {{name: echo, effect: allow, tools: [echo]}}\n  - {{name: add-v{version}, effect: {add}, tools: [add]}}\n"
    )
}

/// Publishes `text` as Kubernetes does: a new data directory, then an atomic rename of the
/// `..data` symlink onto it.
fn publish(dir: &Path, version: usize, text: &str) {
    let data = dir.join(format!("..2026_11_24_{version:04}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("policy.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_fail_nothing_and_an_invalid_swap_is_rejected() {
    let upstream = spawn_upstream().await;
    let dir = TempDir::new("policy-reload");
    let keys = dir.path("keys.yaml");
    write_keys(&keys, &[(KEY, "loader", &[])]);
    let mount = dir.path("config");
    std::fs::create_dir(&mount).unwrap();
    publish(&mount, 0, &policy(0));
    symlink("..data/policy.yaml", mount.join("policy.yaml")).unwrap();
    let yaml = format!(
        "auth:\n  api_keys:\n    file: {}\npolicy:\n  file: {}\n  reload_interval: 50ms\n",
        keys.display(),
        mount.join("policy.yaml").display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
    let s = sentinel::start_with(cfg, true).await;
    let opts = ClientOptions::default().header("X-API-Key", KEY);
    let era = Era::all().pop().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = connect(&s.url, &era, &opts).await.unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client
                    .call_tool(tool_call("echo", json!({"text": "x"})))
                    .await
                {
                    Ok(r) if r.is_error != Some(true) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                // `add` flips with every swap: each call must be decided by one version or the
                // other — the sum, or the policy's "tool not found" — never anything else.
                match client
                    .call_tool(tool_call("add", json!({"a": 1, "b": 2})))
                    .await
                {
                    Ok(r) if r.content[0].as_text().is_some_and(|t| t.text == "3") => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) if format!("{e:?}").contains("tool not found") => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            let _ = client.cancel().await;
        }));
    }

    let checker = connect(&s.url, &era, &opts).await.unwrap();
    for version in 1..=20 {
        publish(&mount, version, &policy(version));
        assert_eq!(
            s.metric_eventually(
                r#"mcp_sentinel_policy_reloads_total{result="success"}"#,
                version as f64,
            )
            .await,
            version as f64
        );
        // The new version is the one deciding now.
        let add = checker
            .call_tool(tool_call("add", json!({"a": 1, "b": 2})))
            .await;
        assert_eq!(
            add.is_ok(),
            version.is_multiple_of(2),
            "version {version}: {add:?}"
        );
    }
    // An invalid policy: rejected, counted once, the running one (version 20) kept.
    publish(&mount, 21, "default: maybe\nrules: {}\n");
    assert_eq!(
        s.metric_eventually(
            r#"mcp_sentinel_policy_reloads_total{result="failure"}"#,
            1.0
        )
        .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        checker
            .call_tool(tool_call("add", json!({"a": 1, "b": 2})))
            .await
            .is_ok()
    );
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran throughout");
    assert_eq!(
        s.metric(r#"mcp_sentinel_policy_reloads_total{result="failure"}"#)
            .await,
        1.0,
        "an invalid file is reported once, not at every poll"
    );
    assert_eq!(
        s.metric(r#"mcp_sentinel_policy_reloads_total{result="success"}"#)
            .await,
        20.0
    );
    let metrics = s.metrics().await;
    let hash = common::keys::sha256_hex(&policy(20));
    assert!(
        metrics.contains(&format!(
            "mcp_sentinel_policy_info{{hash=\"{}\",source=\"file\"}} 1",
            &hash[..16]
        )),
        "the info metric names the running policy"
    );
    assert_eq!(
        metrics.matches("mcp_sentinel_policy_info{").count(),
        1,
        "only the running policy is reported"
    );
    let _ = checker.cancel().await;
}
