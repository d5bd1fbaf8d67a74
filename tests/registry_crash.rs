//! Crash safety of a validator process, on SQLite and PostgreSQL: the process aborts at each
//! named point of a block's commit (before the database transaction, inside it after the block
//! row, inside it before commit, after commit), and is SIGKILLed repeatedly at arbitrary moments
//! (mostly inside commonware's journal and archive writes, which run all the time). Every restart
//! resumes at the last committed block — the stored state reproduces that header's roots, no
//! partial block — and the chain goes on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod registry_util;

use std::time::Duration;

use civis_core::chain::state::Genesis;
use civis_registry::store::{SqlStore, Store};
use registry_util::{Cluster, fresh_postgres, runtime};

const POINTS: [&str; 4] = [
    "before-transaction",
    "after-block-row",
    "before-commit",
    "after-commit",
];
const CRASH_HEIGHT: u64 = 4;

/// Open the store (the node is down) and check it: returns the committed height. `resume`
/// rebuilds the state and refuses it unless it reproduces the last header's roots.
fn committed(db: &str, genesis: &Genesis) -> u64 {
    runtime().block_on(async {
        let store = SqlStore::connect(db).await.unwrap();
        let resumed = store.resume(genesis).await.expect("consistent store");
        let h = store.height().await.unwrap();
        assert_eq!(resumed.head.height, h);
        store.close().await;
        h
    })
}

fn crash_cycle(name: &str, base: u16, db_for: impl Fn(&Cluster) -> String) {
    for (k, point) in POINTS.iter().enumerate() {
        let mut c = Cluster::init(&format!("{name}-{k}"), 1, base + k as u16 * 2);
        let db = db_for(&c);
        let genesis =
            Genesis::from_json(&std::fs::read_to_string(c.dir.join("genesis.json")).unwrap())
                .unwrap();
        c.start_crashing(0, Some(&db), &format!("{point}@{CRASH_HEIGHT}"));
        assert!(
            c.wait_exit(0, Duration::from_secs(60)),
            "the node did not crash at {point}"
        );
        assert!(
            c.log_of(0).contains("crash test: aborting"),
            "{}",
            c.log_of(0)
        );
        let expected = if *point == "after-commit" {
            CRASH_HEIGHT
        } else {
            CRASH_HEIGHT - 1
        };
        assert_eq!(
            committed(&db, &genesis),
            expected,
            "{point}: last committed height"
        );
        c.start(0, Some(&db));
        c.wait_height(0, CRASH_HEIGHT + 3);
        c.stop(0);
        assert!(committed(&db, &genesis) >= CRASH_HEIGHT + 3);
    }

    // SIGKILL at arbitrary moments, repeatedly.
    let mut c = Cluster::init(&format!("{name}-kill"), 1, base + 20);
    let db = db_for(&c);
    let genesis =
        Genesis::from_json(&std::fs::read_to_string(c.dir.join("genesis.json")).unwrap()).unwrap();
    let mut last = 0;
    for round in 0..6u64 {
        c.start(0, Some(&db));
        c.wait_height(0, last + 1);
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        c.kill(0);
        let h = committed(&db, &genesis);
        assert!(h >= last, "committed height went back from {last} to {h}");
        last = h;
    }
    c.start(0, Some(&db));
    c.wait_height(0, last + 3);
}

#[test]
fn sqlite_validator_survives_crashes() {
    crash_cycle("crash-sqlite", 17500, |c| {
        format!("sqlite:{}", c.dir.join("crash.db").display())
    });
}

#[test]
fn postgres_validator_survives_crashes() {
    let admin = std::env::var("CIVIS_TEST_POSTGRES_URL")
        .expect("CIVIS_TEST_POSTGRES_URL: run ./scripts/test.sh, which starts PostgreSQL");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    crash_cycle("crash-pg", 17700, |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fresh_postgres(&admin, &format!("civis_crash_{n}"))
    });
}
