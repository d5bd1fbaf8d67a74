//! `civis kiosk sync` against a real validator and against a lying one: the kiosk's database
//! advances only on bundles the light client accepts, and keeps its snapshot whole otherwise —
//! a rollback, another chain's bundle, a truncated or corrupted bundle, a registry that goes
//! away mid-answer or is not there at all (issue #12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod registry_util;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use registry_util::{Cluster, civis};
use serde_json::Value;

/// A registry that answers every request with `body` — declaring `declared` bytes, then
/// hanging up after the body.
fn liar(body: Vec<u8>, declared: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(&body);
        }
    });
    url
}

fn sync(db: &Path, genesis: &Path, urls: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "kiosk",
        "sync",
        "--genesis",
        genesis.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    for u in urls {
        args.extend(["--registry", u]);
    }
    let out = civis(&args);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(db: &Path, genesis: &Path) -> Value {
    let out = civis(&[
        "kiosk",
        "status",
        "--genesis",
        genesis.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The stored snapshot as `civis kiosk status` reports it, without its age:
/// the age follows the wall clock, the rest must not move on a refused sync.
fn snapshot(db: &Path, genesis: &Path) -> Value {
    let mut s = status(db, genesis)["snapshot"].clone();
    s.as_object_mut().expect("a snapshot").remove("ageSecs");
    s
}

fn get_bytes(url: &str) -> Vec<u8> {
    registry_util::runtime().block_on(async {
        reqwest::get(url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

#[test]
fn the_kiosk_advances_only_on_bundles_it_verifies_and_keeps_its_snapshot_otherwise() {
    let mut reg = Cluster::init("kiosk-sync", 1, 18800);
    reg.start(0, None);
    let mut other = Cluster::init("kiosk-other", 1, 18810);
    other.start(0, None);
    let genesis = reg.dir.join("genesis.json");
    let db = reg.dir.join("kiosk.db");
    reg.wait_height(0, 2);
    other.wait_height(0, 2);

    // First sync through a dead URL and then the validator: created.
    let (code, first, text) = sync(&db, &genesis, &["http://127.0.0.1:9", &reg.url(0)]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(first["from"], Value::Null);
    // Its progress on stderr, step by step (stdout is the one JSON line).
    for step in [
        "asking the registry for the whole state (first sync)",
        "checking the bundle (",
        "storing the new snapshot",
    ] {
        assert!(text.contains(step), "{step}: {text}");
    }
    let h1 = first["height"].as_u64().unwrap();
    // The bundle a first sync gets now: replayed later, it is a rollback.
    let old_bundle = get_bytes(&format!("{}/v1/sync", reg.url(0)));

    // A delta after more blocks.
    let alice = reg.dir.join("alice.jwk");
    assert!(
        civis(&["registry", "keygen", "--out", alice.to_str().unwrap()])
            .status
            .success()
    );
    reg.tx(&alice, &["create-did"]).unwrap();
    reg.wait_height(0, h1 + 3);
    let (code, delta, text) = sync(&db, &genesis, &[&reg.url(0)]);
    assert_eq!(code, 0, "{text}");
    let h2 = delta["height"].as_u64().unwrap();
    assert!(h2 > h1 && delta["from"] == h1, "{delta}");
    assert!(
        text.contains(&format!("the changes since height {h1}")),
        "{text}"
    );
    let kept = snapshot(&db, &genesis);
    assert_eq!(kept["height"], h2);

    // Liars: each refused, the snapshot unchanged, the refusal logged by kind.
    let mut corrupted = old_bundle.clone();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0x40;
    let foreign = get_bytes(&format!("{}/v1/sync", other.url(0)));
    let cases: Vec<(&str, Vec<u8>, usize, i32)> = vec![
        ("rollback", old_bundle.clone(), old_bundle.len(), 65),
        ("truncated", old_bundle[..mid].to_vec(), mid, 65),
        ("corrupted", corrupted.clone(), corrupted.len(), 65),
        ("another chain", foreign.clone(), foreign.len(), 65),
        (
            "gone mid-answer",
            old_bundle[..mid].to_vec(),
            old_bundle.len(),
            69,
        ),
    ];
    for (what, body, declared, want) in cases {
        let url = liar(body, declared);
        let (code, _, text) = sync(&db, &genesis, &[&url]);
        assert_eq!(code, want, "{what}: {text}");
        assert!(
            text.contains(&format!("keeps its snapshot at height {h2}")),
            "{what}: {text}"
        );
        assert_eq!(snapshot(&db, &genesis), kept, "{what}");
    }
    let (code, _, text) = sync(&db, &genesis, &["http://127.0.0.1:9"]);
    assert_eq!(code, 69, "{text}");
    // A database in a folder that does not exist: the error names the file.
    let nowhere = Path::new("/nonexistent-civis-folder/kiosk.db");
    let (code, _, text) = sync(nowhere, &genesis, &[&reg.url(0)]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("/nonexistent-civis-folder/kiosk.db"),
        "{text}"
    );
    assert_eq!(snapshot(&db, &genesis), kept);
    let st = status(&db, &genesis);
    let outcomes: Vec<&str> = st["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "unreachable",
            "unreachable",
            "refused",
            "refused",
            "refused",
            "refused",
            "advanced",
            "advanced"
        ]
    );

    // The honest registry still advances it.
    reg.wait_height(0, h2 + 2);
    let (code, next, text) = sync(&db, &genesis, &[&reg.url(0)]);
    assert_eq!(code, 0, "{text}");
    assert!(next["height"].as_u64().unwrap() > h2 && next["from"] == h2);

    // The database holds nothing but chain state and sync counts.
    let bytes = std::fs::read(&db).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"Jansen\0\0"));
}

/// `civis evote tally-auth`: counts and the double authentications a station's database holds
/// (two stations' records after an exchange); a missing database is an error, not zero voters.
#[test]
fn evote_tally_auth_prints_counts_and_the_double_authentications() {
    use civis_verifier::ledger::{Authentication, Pseudonym};
    let dir = std::env::temp_dir().join(format!("civis-tally-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("station.db");
    registry_util::runtime().block_on(async {
        let store = civis_verifier::store::KioskStore::open(&db).await.unwrap();
        let a = |p: u8, station: &str, at: i64| Authentication {
            pseudonym: Pseudonym([p; 32]),
            station: station.into(),
            at,
        };
        for rec in [a(1, "north", 10), a(2, "north", 20), a(1, "north", 30)] {
            store
                .record_authentication("city-2027", &rec)
                .await
                .unwrap();
        }
        store
            .import_authentications("city-2027", &[a(2, "south", 25), a(3, "south", 26)])
            .await
            .unwrap();
        store
            .record_authentication("city-2028", &a(1, "north", 40))
            .await
            .unwrap();
        store.close().await;
    });
    let tally = |db: &Path| {
        civis(&[
            "evote",
            "tally-auth",
            "--election",
            "city-2027",
            "--db",
            db.to_str().unwrap(),
        ])
    };
    let out = tally(&db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["authentications"], 5);
    assert_eq!(v["voters"], 3);
    let dups = v["duplicates"].as_array().unwrap();
    assert_eq!(dups.len(), 2, "{v}");
    assert_eq!(dups[0]["pseudonym"], hex::encode([1u8; 32]));
    assert_eq!(dups[0]["stations"], serde_json::json!(["north"]));
    assert_eq!(dups[1]["count"], 2);
    assert_eq!(dups[1]["stations"], serde_json::json!(["north", "south"]));
    let missing = dir.join("typo.db");
    let out = tally(&missing);
    assert_eq!(out.status.code(), Some(64));
    assert!(!missing.exists(), "a database was created for a typo");
    let _ = std::fs::remove_dir_all(&dir);
}
