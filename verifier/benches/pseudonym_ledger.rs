//! The polling station's double-authentication lookup (`KioskStore::authenticated`) and record
//! (`KioskStore::record_authentication`, a transaction with its commit) on a ledger already
//! holding N pseudonyms of one election (default 10 million, `CIVIS_BENCH_PSEUDONYMS`).
//!
//! `cargo bench -p civis-verifier --bench pseudonym_ledger` — loads the ledger first (sorted
//! bulk insert through a second connection, about a minute for 10 M), then times 10,000
//! lookups of recorded and of unknown pseudonyms and 1,000 new records; prints p50 / p99.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Instant;

use civis_verifier::ledger::{Authentication, Pseudonym, Recorded};
use civis_verifier::store::KioskStore;
use sha2::{Digest, Sha256};
use sqlx::Connection as _;

const ELECTION: &str = "city-2027";

fn pseudonym(i: u64) -> [u8; 32] {
    Sha256::digest(i.to_be_bytes()).into()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    let n: u64 = std::env::var("CIVIS_BENCH_PSEUDONYMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("civis-ledger-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kiosk.db");
    rt.block_on(async {
        let store = KioskStore::open(&path).await.unwrap();
        // Bulk load through a second connection: sorted keys append to the B-tree.
        let t = Instant::now();
        let mut keys: Vec<[u8; 32]> = (0..n).map(pseudonym).collect();
        keys.sort_unstable();
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("PRAGMA synchronous = OFF").execute(&mut conn).await.unwrap();
        sqlx::query("PRAGMA cache_size = -262144").execute(&mut conn).await.unwrap();
        for chunk in keys.chunks(200_000) {
            let mut tx = conn.begin().await.unwrap();
            for rows in chunk.chunks(200) {
                let mut sql = String::from("INSERT INTO evote_auth (election, pseudonym, station, at) VALUES ");
                for i in 0..rows.len() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str("(?, ?, 'north', 1000)");
                }
                let mut q = sqlx::query(&sql);
                for k in rows {
                    q = q.bind(ELECTION).bind(&k[..]);
                }
                q.execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        drop(conn);
        drop(keys);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(dir.join("kiosk.db-wal")).map(|m| m.len()).unwrap_or(0);
        println!(
            "loaded {n} pseudonyms in {:.1} s ({:.0} MiB on disk)",
            t.elapsed().as_secs_f64(),
            size as f64 / 1048576.0
        );

        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for i in 0..10_000u64 {
            let p = Pseudonym(pseudonym((i * 7919) % n));
            let t = Instant::now();
            assert!(store.authenticated(ELECTION, &p).await.unwrap());
            known.push(t.elapsed().as_secs_f64() * 1e6);
            let q = Pseudonym(pseudonym(n + i));
            let t = Instant::now();
            assert!(!store.authenticated(ELECTION, &q).await.unwrap());
            unknown.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let mut record = Vec::new();
        for i in 0..1_000u64 {
            let a = Authentication {
                pseudonym: Pseudonym(pseudonym(2 * n + i)),
                station: "north".into(),
                at: 2000,
            };
            let t = Instant::now();
            assert_eq!(store.record_authentication(ELECTION, &a).await.unwrap(), Recorded::First);
            record.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let again = Authentication {
            pseudonym: Pseudonym(pseudonym(0)),
            station: "south".into(),
            at: 3000,
        };
        assert!(matches!(
            store.record_authentication(ELECTION, &again).await.unwrap(),
            Recorded::Again { .. }
        ));
        let (k50, k99) = percentiles(known);
        let (u50, u99) = percentiles(unknown);
        let (r50, r99) = percentiles(record);
        println!("RESULT lookup, recorded pseudonym ({n} in the ledger): p50 {k50:.1} us, p99 {k99:.1} us (target <= 1 ms)");
        println!("RESULT lookup, unknown pseudonym: p50 {u50:.1} us, p99 {u99:.1} us");
        println!("RESULT record a new authentication (lookup + insert + commit): p50 {r50:.1} us, p99 {r99:.1} us");
        store.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
