//! Status changes anchored per second: the issuer's anchoring worker carrying recorded changes
//! to a one-validator registry (`civis registry run`, release build, SQLite) in batched
//! `update-status` transactions, until every change is anchored at a height.
//!
//! `cargo bench -p civis --bench issuer_anchoring` (environment: `CIVIS_BENCH_CHANGES`, default
//! 100,000). The changes are written to the issuer's database first (as the API records them),
//! then the clock runs from the first anchoring round to the last change anchored.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civis_issuer::store::{Audit, NewChange};
use civis_issuer::{Config, Service};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let n: i64 = std::env::var("CIVIS_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bin = env!("CARGO_BIN_EXE_civis");
    let dir = std::env::temp_dir().join(format!("civis-anchor-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reg = dir.join("reg");
    let ok = Command::new(bin)
        .args(["registry", "init", "--dir", reg.to_str().unwrap()])
        .args([
            "--validators",
            "1",
            "--chain-id",
            "anchor-bench",
            "--port-base",
            "18600",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let log = std::fs::File::create(dir.join("validator.log")).unwrap();
    let _node = Node(
        Command::new(bin)
            .args(["registry", "run", "--dir", reg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let url = "http://127.0.0.1:18700";
    let out = Command::new(bin)
        .args(["issuer", "init", "--dir", dir.join("iss").to_str().unwrap()])
        .args(["--genesis", reg.join("genesis.json").to_str().unwrap()])
        .args(["--registry", url, "--listen", "127.0.0.1:18780"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let did = text
        .lines()
        .find_map(|l| l.strip_prefix("issuer DID"))
        .unwrap()
        .trim()
        .to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config::load(&dir.join("iss/issuer.toml")).unwrap();
        let max_per_tx = config.anchoring.max_changes_per_tx;
        let svc = Arc::new(Service::open(config).await.unwrap());
        let client = civis_registry_client::Client::new(url).unwrap();
        let agency = Arc::clone(svc.agency("civil-registry").unwrap());
        // Registration: the DID, governance's accreditation, the list.
        let started = Instant::now();
        loop {
            let _ = civis_issuer::anchor::round(&svc, &client, &agency).await;
            if client.did(&agency.did).await.is_ok() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "registry never came up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let until = (time::OffsetDateTime::now_utc().unix_timestamp() + 86_400).to_string();
        let ok = Command::new(bin)
            .args(["registry", "tx", "--node", url, "--key"])
            .arg(reg.join("governance.jwk"))
            .args(["accredit-issuer", "--issuer", &did, "--doc-type", "org.civis.citizen.1"])
            .args(["--until", &until])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        while !svc.is_registered(agency.id()) {
            let _ = civis_issuer::anchor::round(&svc, &client, &agency).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Record the changes as the API would: suspensions of distinct entries.
        let list = agency.config.status_list.clone();
        for chunk in 0..(n + 4_999) / 5_000 {
            let changes: Vec<NewChange> = (chunk * 5_000..((chunk + 1) * 5_000).min(n))
                .map(|i| NewChange {
                    credential: format!("c{i}"),
                    list: list.clone(),
                    idx: i,
                    value: 2,
                })
                .collect();
            let key = format!("bench-{chunk}");
            let audit = Audit {
                agency: agency.id(),
                actor: "bench",
                action: "status",
                object: "bench",
                request_key: &key,
                at: 0,
            };
            svc.store
                .record_changes(&changes, &audit, ("status", &key))
                .await
                .unwrap();
        }
        let started = Instant::now();
        let mut txs = 0;
        while svc.store.unanchored_count().await.unwrap() > 0 {
            match civis_issuer::anchor::round(&svc, &client, &agency).await {
                Ok(r) => txs += r.final_txs,
                Err(e) => eprintln!("round: {e}"),
            }
        }
        let took = started.elapsed();
        println!(
            "anchored {n} status changes in {:.2} s: {:.0} changes/s ({txs} update-status transactions of up to {max_per_tx})",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        svc.store.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
