//! The registry through real `civis registry` processes on loopback ports: one validator on
//! SQLite (transactions, online resolution with proof, kiosk sync, hostile input, restart), and
//! four validators with one on PostgreSQL (one down: finality continues; two down: it stops
//! without divergence; back up: everyone catches up with equal state roots).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod registry_util;

use std::time::Duration;

use registry_util::{Cluster, civis, json_of};
use serde_json::Value;

#[test]
fn one_validator_on_sqlite() {
    let mut c = Cluster::init("single", 1, 17100);
    c.start(0, None);
    let node = c.url(0);
    let dir = c.dir.clone();

    // A DID, an accredited issuer, a status list with revocations.
    let alice = dir.join("alice.jwk");
    let did = civis(&["registry", "keygen", "--out", alice.to_str().unwrap()]);
    assert!(did.status.success());
    let did = String::from_utf8(did.stdout).unwrap().trim().to_owned();
    assert!(did.starts_with("did:civis:"));
    c.tx(&alice, &["create-did"]).expect("create-did");
    let gov = dir.join("governance.jwk");
    c.tx(
        &gov,
        &[
            "accredit-issuer",
            "--issuer",
            &did,
            "--doc-type",
            "org.civis.citizen.1",
            "--until",
            "4000000000",
        ],
    )
    .expect("accredit");
    c.tx(
        &alice,
        &["create-status-list", "--list", "main", "--size", "20000"],
    )
    .expect("list");
    c.tx(&alice, &["status-update", "--list", "main", "--set", "7=1"])
        .expect("revoke 7");

    // Online resolution checks the proof against the header's public root.
    let out = civis(&["registry", "resolve", "--node", &node, &did]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["id"], did.as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains("record proven"));

    // Kiosk sync: created, then a small delta; a foreign genesis is refused and changes nothing.
    let snap = dir.join("kiosk.snapshot");
    let genesis = dir.join("genesis.json");
    let first = c.sync(&genesis, &snap).expect("first sync");
    assert!(first.contains("created"), "{first}");
    c.tx(&alice, &["status-update", "--list", "main", "--set", "8=1"])
        .expect("revoke 8");
    let second = c.sync(&genesis, &snap).expect("second sync");
    assert!(second.contains("updated"), "{second}");
    let before = std::fs::read(&snap).unwrap();
    let other = Cluster::init("single-other", 1, 17150);
    let refused = c.sync(&other.dir.join("genesis.json"), &snap);
    assert!(
        refused.is_err(),
        "a snapshot of another genesis must be refused"
    );
    assert_eq!(
        std::fs::read(&snap).unwrap(),
        before,
        "the old snapshot is kept"
    );

    // Hostile input: clear errors, nothing changes.
    let block = c.block_with_transactions(0);
    let replay = c.tx_bytes(0, &block);
    let rt = registry_util::runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let post = |body: Vec<u8>| {
            let http = http.clone();
            let url = format!("{node}/v1/transactions");
            async move {
                let r = http.post(url).body(body).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        };
        let (s, v) = post(Vec::new()).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("malformed")));
        let (s, v) = post(b"\xa1\x61".to_vec()).await;
        assert_eq!((s, v["error"].as_str()), (400, Some("malformed")));
        let (s, v) = post(vec![0x58; 600 * 1024]).await;
        assert_eq!((s, v["error"].as_str()), (413, Some("too_large")));
        // Replaying an included transaction: its sequence number is spent.
        let (s, v) = post(replay.clone()).await;
        assert_eq!(s, 422, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("sequence number"),
            "{v}"
        );
        // A forged signature.
        let mut forged = replay;
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let (s, v) = post(forged).await;
        assert_eq!(s, 422, "{v}");
        assert!(v["message"].as_str().unwrap().contains("signature"), "{v}");
    });
    // An unauthorized status update (bob is not the list's issuer) is dropped with its reason.
    let bob = dir.join("bob.jwk");
    let bob_did = civis(&["registry", "keygen", "--out", bob.to_str().unwrap()]);
    let bob_did = String::from_utf8(bob_did.stdout).unwrap().trim().to_owned();
    c.tx(&bob, &["create-did"]).expect("bob");
    let err = c
        .tx(&bob, &["status-update", "--list", "main", "--set", "9=1"])
        .expect_err("bob may not update alice's list");
    assert!(err.contains("refused"), "{err}");
    let list = c.get(0, "/v1/status-lists/0");
    let _ = bob_did;
    assert_eq!(list["uri"], format!("{did}/status/main"));

    // Restart: the validator resumes from SQLite at its last block and keeps going.
    let height = c.health(0)["height"].as_u64().unwrap();
    let digest = c.get(0, &format!("/v1/blocks/{height}"))["digest"].clone();
    c.stop(0);
    c.start(0, None);
    let after = c.wait_height(0, height + 2);
    assert!(after > height);
    assert_eq!(c.get(0, &format!("/v1/blocks/{height}"))["digest"], digest);
    let out = civis(&["registry", "resolve", "--node", &node, &did]);
    assert!(out.status.success());
    let third = c.sync(&genesis, &snap).expect("sync after restart");
    assert!(third.contains("updated"), "{third}");
}

#[test]
fn four_validators_one_on_postgres() {
    let pg = std::env::var("CIVIS_TEST_POSTGRES_URL")
        .expect("CIVIS_TEST_POSTGRES_URL: run ./scripts/test.sh, which starts PostgreSQL");
    let db = registry_util::fresh_postgres(&pg, "civis_cluster");
    let mut c = Cluster::init("cluster", 4, 17300);
    for i in 0..3 {
        c.start(i, None);
    }
    c.start(3, Some(&db));
    c.wait_all(&[0, 1, 2, 3], 3);
    let alice = c.dir.join("alice.jwk");
    civis(&["registry", "keygen", "--out", alice.to_str().unwrap()]);
    c.tx(&alice, &["create-did"]).expect("create-did");

    // One down: three of four are a quorum.
    c.kill(3);
    let h = c.health(0)["height"].as_u64().unwrap();
    c.wait_all(&[0, 1, 2], h + 3);
    c.tx(
        &alice,
        &["create-status-list", "--list", "x", "--size", "100"],
    )
    .expect_err("alice is not accredited: refused, but finality works");

    // Two down: no quorum, so no new blocks and no divergence.
    c.kill(2);
    std::thread::sleep(Duration::from_secs(3));
    let stalled: Vec<u64> = [0, 1]
        .iter()
        .map(|&i| c.health(i)["height"].as_u64().unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    let later: Vec<u64> = [0, 1]
        .iter()
        .map(|&i| c.health(i)["height"].as_u64().unwrap())
        .collect();
    // A lagging one of the two may still copy a block it missed from the other, so compare
    // the highest: nothing new is finalized.
    assert_eq!(
        stalled.iter().max(),
        later.iter().max(),
        "two of four validators must not finalize: {stalled:?} then {later:?}"
    );

    // Back up: all catch up, with the same blocks everywhere.
    c.start(2, None);
    c.start(3, Some(&db));
    let top = later.iter().max().copied().unwrap();
    c.wait_all(&[0, 1, 2, 3], top + 3);
    for height in 1..=top + 3 {
        let digests: Vec<Value> = (0..4)
            .map(|i| c.get(i, &format!("/v1/blocks/{height}"))["digest"].clone())
            .collect();
        assert!(
            digests.iter().all(|d| *d == digests[0]),
            "validators diverged at {height}: {digests:?}"
        );
    }
    let _ = json_of;
}

/// A validator-set change between processes: four validators with 12-block epochs and a fifth,
/// prepared with `add-validator`, following as an observer. Governance votes validator 0 out and
/// the fifth in; after the epoch boundary the new set alone finalizes (validators 0 and 1
/// stopped: the old set would have 2 of 4), and a kiosk snapshot follows the change through
/// `civis registry sync`, cold and then as a delta.
#[test]
fn validator_set_change_between_processes() {
    let mut c = Cluster::init_with("epochs", 4, 17500, &["--epoch-length", "12"]);
    let fifth = c.add_validator();
    assert_eq!(fifth, 4);
    for i in 0..=fifth {
        c.start(i, None);
    }
    c.wait_all(&[0, 1, 2, 3, 4], 2);
    let gov = c.dir.join("governance.jwk");
    let mut args = vec!["set-validators".to_owned()];
    for i in 1..=fifth {
        args.push("--validator".into());
        args.push(
            c.dir
                .join(format!("validator-{i}.jwk"))
                .display()
                .to_string(),
        );
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.tx(&gov, &args).expect("set-validators");
    // Past the boundary (height 11) and into epoch 1 everywhere.
    c.wait_all(&[0, 1, 2, 3, 4], 15);
    assert!(c.health(4)["epoch"].as_u64().unwrap() >= 1);

    let genesis = c.dir.join("genesis.json");
    let snapshot = c.dir.join("kiosk.snapshot");
    let out = c
        .sync_from(2, &genesis, &snapshot)
        .expect("cold sync across the change");
    assert!(
        out.contains("validator set of epoch 1 (1 change(s) followed)"),
        "{out}"
    );

    c.kill(0);
    c.kill(1);
    let h = c.health(2)["height"].as_u64().unwrap();
    c.wait_all(&[2, 3, 4], h + 5);
    let alice = c.dir.join("alice.jwk");
    civis(&["registry", "keygen", "--out", alice.to_str().unwrap()]);
    let mut tx = vec!["registry", "tx", "--node"];
    let node = c.url(4);
    tx.push(&node);
    tx.extend(["--key", alice.to_str().unwrap(), "create-did"]);
    let created = civis(&tx);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let out = c
        .sync_from(3, &genesis, &snapshot)
        .expect("delta sync in the new epoch");
    assert!(out.starts_with("updated"), "{out}");
    assert!(out.contains("(0 change(s) followed)"), "{out}");
    let stderr = String::from_utf8_lossy(&created.stderr);
    let did = stderr
        .split_whitespace()
        .find(|w| w.starts_with("did:civis:"))
        .expect("create-did prints the DID");
    // Node 4 included the transaction; node 3 resolves it once it has that block too.
    c.wait_all(&[3], c.health(4)["height"].as_u64().unwrap());
    let resolve = civis(&["registry", "resolve", "--node", &c.url(3), did]);
    assert!(
        resolve.status.success(),
        "{}",
        String::from_utf8_lossy(&resolve.stderr)
    );
}

/// Review items 5, 8 and 9 against the running binary.
/// - Six clients loop on cold `/v1/sync` requests: the node builds each distinct bundle once
///   (every other answer comes from its cache), a client past its allowance gets 429 with
///   Retry-After, and a transaction submitted meanwhile still finalizes.
/// - Every private key `registry init` and `keygen` write is mode 0600.
/// - Block heights past what a store can index are 404, not 500.
#[test]
fn sync_flood_key_files_and_absurd_heights() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut c = Cluster::init("flood", 1, 17700);
    c.start_with(
        0,
        None,
        &["--sync-burst", "60", "--sync-per-second", "0.001"],
    );
    let node = c.url(0);
    let dir = c.dir.clone();
    let alice = dir.join("alice.jwk");
    assert!(
        civis(&["registry", "keygen", "--out", alice.to_str().unwrap()])
            .status
            .success()
    );
    // The directory holding them is the owner's alone, whatever the umask.
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o077, 0, "registry directory is {dir_mode:o}");
    for f in [
        "governance.jwk",
        "governance.next.jwk",
        "validator-0.jwk",
        "alice.jwk",
        "alice.next.jwk",
    ] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} is {mode:o}");
    }

    // A certified block to sync to.
    c.wait_height(0, 2);
    let rt = registry_util::runtime();
    let flood = || {
        rt.block_on(async {
            let http = reqwest::Client::new();
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let (http, url) = (http.clone(), format!("{node}/v1/sync"));
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for _ in 0..20 {
                        let r = http.get(&url).send().await.unwrap();
                        let status = r.status().as_u16();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        out.push((status, retry, r.bytes().await.unwrap().to_vec()));
                    }
                    out
                }));
            }
            let mut bodies = std::collections::BTreeSet::new();
            let (mut limited, mut retry_after) = (0usize, None);
            for t in tasks {
                for (status, retry, body) in t.await.unwrap() {
                    match status {
                        200 => {
                            bodies.insert(body);
                        }
                        429 => {
                            limited += 1;
                            retry_after = retry_after.or(retry);
                        }
                        other => panic!("sync answered {other}"),
                    }
                }
            }
            (bodies, limited, retry_after)
        })
    };
    // The flood and a transaction at the same time: the transaction still finalizes.
    let ((bodies, limited, retry_after), created) = std::thread::scope(|s| {
        let flooding = s.spawn(flood);
        let created = c.tx(&alice, &["create-did"]);
        (flooding.join().unwrap(), created)
    });
    created.expect("create-did during the flood");
    // 120 requests from one address with an allowance of 60.
    assert_eq!(limited, 60, "requests past the allowance are refused");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    let get = |path: String| {
        rt.block_on(async {
            let r = reqwest::get(format!("{node}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let metrics = get("/metrics".into()).1;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        counter("civis_sync_bundles_built_total"),
        bodies.len() as u64,
        "each distinct bundle is built once"
    );
    assert_eq!(
        counter("civis_sync_bundles_cached_total") + bodies.len() as u64,
        60
    );
    for h in ["9223372036854775808", "18446744073709551615"] {
        let (status, body) = get(format!("/v1/blocks/{h}"));
        assert_eq!(status, 404, "height {h}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "not_found");
    }

    // `civis evote register`: governance registers an election; a rule naming an identifying
    // element, and the same id again, are refused with the reason.
    let gov = dir.join("governance.jwk");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (opens, closes) = ((now - 60).to_string(), (now + 3600).to_string());
    let register = |id: &str, extra: &[&str]| {
        let mut args = vec![
            "evote",
            "register",
            "--node",
            &node,
            "--key",
            gov.to_str().unwrap(),
            "--id",
            id,
            "--age-over-18",
            "--district",
            "Harbour",
            "--district",
            "Old Town",
            "--opens",
            &opens,
            "--closes",
            &closes,
        ];
        args.extend_from_slice(extra);
        civis(&args)
    };
    let ok = register("council-2027", &["--reauth", "last-counts"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // One JSON line: the transaction's outcome, included in a block.
    let answer: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(answer.to_string().contains("included"), "{answer}");
    let again = register("council-2027", &[]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("the election exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Refused before anything is signed (usage, 64), with the reason and no raw escapes:
    // a district with control characters, one given twice, a rule given twice, a long id.
    for (id, extra, why) in [
        (
            "e-ctl",
            &["--district", "\u{1b}[2J"][..],
            "control characters",
        ),
        ("e-dup", &["--district", "Harbour"][..], "repeated"),
        (
            "e-twice",
            &["--require", "age_over_18=false"][..],
            "given twice",
        ),
        (&"x".repeat(65)[..], &[][..], "--id"),
    ] {
        let out = register(id, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{id}: {err}");
        assert!(err.contains(why), "{id}: {err}");
        assert!(!err.contains('\u{1b}'), "{err}");
    }
    let named = register("council-2028", &["--require", "family_name=\"Jansen\""]);
    assert!(!named.status.success());
    assert!(
        String::from_utf8_lossy(&named.stderr).contains("identifies the voter"),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
}

/// Review of issue #10: a client holding idle connections from many loopback addresses used to
/// exhaust a validator's file descriptors; consensus could then not open its journal, panicked,
/// and the node died. The server now accepts at most a quarter of the descriptor limit (the
/// rest wait in the kernel's backlog) and closes idle connections: under the same siege, with a
/// limit of 512 files, the node stays up and keeps finalizing.
#[test]
fn idle_connections_cannot_exhaust_a_validators_files() {
    let mut c = Cluster::init("fds", 1, 17900);
    c.start_with_fd_limit(0, 512);
    let before = c.wait_height(0, 2);
    let port = 17900 + 100;
    // 600 idle connections (fewer if this test process may not open that many files), 50 from
    // each of 12 loopback addresses: more than the node's 512 descriptors could hold.
    let own_limit: usize = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024);
    let wanted = 600.min(own_limit.saturating_sub(200));
    let mut held = Vec::new();
    'open: for a in 1..=12u8 {
        for _ in 0..50 {
            if held.len() >= wanted {
                break 'open;
            }
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket
                .bind(&std::net::SocketAddr::from(([127, 0, 2, a], 0)).into())
                .unwrap();
            let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if socket
                .connect_timeout(&target.into(), Duration::from_secs(2))
                .is_ok()
            {
                held.push(socket);
            }
        }
    }
    assert!(
        held.len() >= wanted / 2,
        "only {} connections opened",
        held.len()
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(c.alive(0), "the validator died under idle connections");
    drop(held);
    // Freed slots: the API answers again, and blocks were finalized all along.
    let after = c.wait_height(0, before + 6);
    assert!(after >= before + 6);
    assert!(c.alive(0));
}
