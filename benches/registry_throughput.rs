//! Registry throughput and finality latency: four `civis registry run` validators on loopback
//! (release build, SQLite), a load generator offering create-did transactions at a fixed rate to
//! all four, and a watcher that sees each transaction finalize.
//!
//! `cargo bench -p civis --bench registry_throughput` (environment: `CIVIS_BENCH_RATE` offered
//! transactions per second, default 1200; `CIVIS_BENCH_SECS` seconds of load, default 20;
//! `CIVIS_BENCH_GOSSIP=0` runs the validators without mempool gossip).
//! Latency is from the moment the submission returns to the moment the watcher, polling node 0
//! every 20 ms, sees the block holding the transaction committed: it includes up to 20 ms of
//! polling delay, so it overstates, never understates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use serde_json::Value;

const N: usize = 4;
const BASE: u16 = 18100;

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn url(i: usize) -> String {
    format!("http://127.0.0.1:{}", BASE + 100 + i as u16)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn create_did(chain: &str, rng: &mut rand_core::OsRng) -> SignedTx {
    let key = SoftwareKey::generate(rng);
    let next = KeyCommitment::to(SoftwareKey::generate(rng).public_key());
    let did = Did::from_inception(key.public_key(), &next);
    SignedTx::sign(
        Tx {
            chain: chain.into(),
            seq: 0,
            op: Op::CreateDid {
                key: key.public_key().clone(),
                next,
            },
        },
        did.key_url(1),
        &key,
    )
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this harness ignores.
    let rate = env_num("CIVIS_BENCH_RATE", 1200);
    let secs = env_num("CIVIS_BENCH_SECS", 20);
    // 1: send each transaction to every validator (what mempool gossip does, from the client).
    let broadcast = env_num("CIVIS_BENCH_BROADCAST", 0) == 1;
    // 1 (default): validators gossip transactions, as `civis registry run` does; 0: they do not,
    // and each transaction waits for the validator it was sent to to lead a view.
    let gossip = env_num("CIVIS_BENCH_GOSSIP", 1) == 1;
    let dir = std::env::temp_dir().join(format!("civis-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_civis");
    let chain = "civis-bench";
    let ok = Command::new(bin)
        .args(["registry", "init", "--dir", dir.to_str().unwrap()])
        .args(["--validators", &N.to_string(), "--chain-id", chain])
        .args(["--port-base", &BASE.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut nodes = Nodes(Vec::new());
    for i in 0..N {
        let log = std::fs::File::create(dir.join(format!("validator-{i}.log"))).unwrap();
        nodes.0.push(
            Command::new(bin)
                .args(["registry", "run", "--dir", dir.to_str().unwrap()])
                .args(["--validator", &i.to_string()])
                .args(if gossip {
                    &[][..]
                } else {
                    &["--no-gossip"][..]
                })
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }
    let total = (rate * secs) as usize;
    eprintln!("signing {total} create-did transactions…");
    let mut rng = rand_core::OsRng;
    let txs: Vec<Vec<u8>> = (0..total)
        .map(|_| create_did(chain, &mut rng).bytes().to_vec())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        // Wait for the chain to finalize its first blocks.
        loop {
            let h = async {
                let v: Value = http.get(format!("{}/v1/health", url(0))).send().await.ok()?.json().await.ok()?;
                v["height"].as_u64()
            }
            .await;
            if h.is_some_and(|h| h >= 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let finalized: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let start_height = {
            let v: Value = http.get(format!("{}/v1/health", url(0))).send().await.unwrap().json().await.unwrap();
            v["height"].as_u64().unwrap()
        };
        // Watcher: new blocks on node 0, their transactions finalized now.
        let watcher = {
            let http = http.clone();
            let finalized = Arc::clone(&finalized);
            tokio::spawn(async move {
                let mut seen = start_height;
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let Ok(r) = http.get(format!("{}/v1/health", url(0))).send().await else { continue };
                    let Ok(v) = r.json::<Value>().await else { continue };
                    let h = v["height"].as_u64().unwrap_or(seen);
                    let now = Instant::now();
                    for height in seen + 1..=h {
                        let b: Value = loop {
                            let got = async {
                                http.get(format!("{}/v1/blocks/{height}", url(0)))
                                    .send()
                                    .await
                                    .ok()?
                                    .json()
                                    .await
                                    .ok()
                            }
                            .await;
                            if let Some(b) = got {
                                break b;
                            }
                        };
                        let mut f = finalized.lock().unwrap();
                        for t in b["transactions"].as_array().unwrap() {
                            f.insert(t["id"].as_str().unwrap().to_owned(), now);
                        }
                    }
                    seen = h;
                }
            })
        };
        eprintln!("offering {rate} tx/s for {secs} s to {N} validators…");
        let begin = Instant::now();
        let mut refused = 0usize;
        let mut inflight = Vec::new();
        for (k, tx) in txs.into_iter().enumerate() {
            let due = begin + Duration::from_secs_f64(k as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let http = http.clone();
            let submitted = Arc::clone(&submitted);
            let fanout = if broadcast { N } else { 1 };
            inflight.push(tokio::spawn(async move {
                let mut first = None;
                for j in 0..fanout {
                    let r = http
                        .post(format!("{}/v1/transactions", url((k + j) % N)))
                        .body(tx.clone())
                        .send()
                        .await
                        .ok()?;
                    let at = Instant::now();
                    let v: Value = r.json().await.ok()?;
                    let id = v["id"].as_str()?.to_owned();
                    first.get_or_insert((id, at));
                }
                let (id, at) = first?;
                submitted.lock().unwrap().insert(id, at);
                Some(())
            }));
        }
        for f in inflight {
            if f.await.unwrap().is_none() {
                refused += 1;
            }
        }
        let offered_for = begin.elapsed();
        // Drain: wait until everything submitted is seen finalized (or 60 s more).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = {
                let s = submitted.lock().unwrap();
                let f = finalized.lock().unwrap();
                s.keys().all(|k| f.contains_key(k))
            };
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watcher.abort();
        let s = submitted.lock().unwrap();
        let f = finalized.lock().unwrap();
        let mut lat: Vec<Duration> = s
            .iter()
            .filter_map(|(id, at)| f.get(id).map(|done| done.saturating_duration_since(*at)))
            .collect();
        lat.sort();
        let last_final = s.keys().filter_map(|id| f.get(id)).max().copied();
        let window = last_final.map_or(offered_for, |t| t.duration_since(begin));
        println!(
            "registry_throughput (gossip {}): offered {rate} tx/s for {secs} s; submitted {}, refused {refused}, finalized {} in {:.1} s = {:.0} tx/s; finality latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            if gossip { "on" } else { "off" },
            s.len(),
            lat.len(),
            window.as_secs_f64(),
            lat.len() as f64 / window.as_secs_f64(),
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    });
    drop(nodes);
    // Slow block steps the validators logged explain a latency tail; show them before cleanup.
    for i in 0..N {
        let log =
            std::fs::read_to_string(dir.join(format!("validator-{i}.log"))).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("slow ")) {
            eprintln!("validator {i}: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
