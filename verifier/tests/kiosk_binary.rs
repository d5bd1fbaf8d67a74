//! The kiosk's own binary, `civis-kiosk`: the same commands as `civis kiosk`, with clear errors
//! and sysexits codes. (The dependency check that it links no card applet is in
//! scripts/test.sh: `cargo tree` of this crate with `cli,nfc`.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

fn kiosk(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_civis-kiosk"))
        .args(args)
        .output()
        .expect("run civis-kiosk");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn civis_kiosk_has_the_kiosk_commands_and_says_what_is_wrong() {
    let (code, out, _) = kiosk(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["sync", "status", "verify", "run"] {
        assert!(out.contains(cmd), "{cmd} missing from: {out}");
    }
    // Unknown flags: usage (64).
    let (code, _, err) = kiosk(&["sync", "--no-such-flag"]);
    assert_eq!(code, 64, "{err}");
    // A genesis that is not there: named in the error, nothing created.
    let dir = std::env::temp_dir().join(format!("civis-kiosk-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("kiosk.db");
    let genesis = dir.join("missing-genesis.json");
    let (code, _, err) = kiosk(&[
        "sync",
        "--registry",
        "http://127.0.0.1:9",
        "--genesis",
        genesis.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("missing-genesis.json"), "{err}");
    assert!(!db.exists(), "a database was created for a failed start");
    // A configuration that is not there: the screen does not start.
    let (code, _, err) = kiosk(&["run", "--config", dir.join("none.toml").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("none.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
