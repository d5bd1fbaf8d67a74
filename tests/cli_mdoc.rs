//! `civis mdoc verify|inspect` and `civis demo` through the real binary: flags, JSON output and
//! exit codes (0 accept, 1 reject, 2 undetermined, 64 usage).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn annex(name: &str) -> PathBuf {
    let p = std::env::var_os("CIVIS_SHARED_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/vectors"))
        .join("iso18013-5")
        .join(name);
    assert!(p.exists(), "missing {}", p.display());
    p
}

fn golden(name: &str) -> PathBuf {
    root().join("specs/vectors/citizen").join(name)
}

fn reader_key() -> String {
    let keys = std::fs::read_to_string(annex("keys.txt")).unwrap();
    keys.lines()
        .find_map(|l| l.strip_prefix("ephemeral_reader_key.d = "))
        .unwrap()
        .trim()
        .to_owned()
}

fn civis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_civis"))
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn verdict(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line, got {stdout:?}");
    serde_json::from_str(&stdout).unwrap()
}

fn annex_args(extra: &[&str]) -> Output {
    let (r, st, iaca) = (
        annex("D.4.1.2_device_response.hex"),
        annex("D.5.1_session_transcript_bytes.hex"),
        annex("iaca_certificate.der.hex"),
    );
    let mut args = vec![
        "mdoc",
        "verify",
        "--response",
        p(&r),
        "--session-transcript",
        p(&st),
        "--trust",
        p(&iaca),
    ];
    args.extend_from_slice(extra);
    civis(&args)
}

#[test]
fn annex_d_accepts_with_reader_key_and_request() {
    let rk = reader_key();
    let req = annex("D.4.1.1_device_request.hex");
    let out = annex_args(&[
        "--at",
        "2021-01-01T00:00:00Z",
        "--reader-key",
        &rk,
        "--request",
        p(&req),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = verdict(&out);
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["doc_type"], "org.iso.18013.5.1.mDL");
    let ns = &v["disclosed"]["org.iso.18013.5.1"];
    assert_eq!(ns["family_name"], "Doe");
    assert_eq!(ns["issue_date"], "2019-10-20", "full-date as YYYY-MM-DD");
    assert!(
        ns["portrait"].as_str().unwrap().starts_with("_9j_"),
        "bstr as base64url"
    );
}

#[test]
fn annex_d_undetermined_without_reader_key() {
    let out = annex_args(&["--at", "2021-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(verdict(&out)["verdict"], "undetermined");
}

#[test]
fn annex_d_rejected_outside_validity_and_with_wrong_key() {
    let rk = reader_key();
    let out = annex_args(&["--at", "2022-06-01T00:00:00Z", "--reader-key", &rk]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        verdict(&out)["reason"]
            .as_str()
            .unwrap()
            .contains("certificate")
    );
    let out = annex_args(&[
        "--at",
        "2021-01-01T00:00:00Z",
        "--reader-key",
        &"11".repeat(32),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        verdict(&out)["reason"]
            .as_str()
            .unwrap()
            .contains("device authentication")
    );
}

#[test]
fn malformed_bytes_are_a_reject_never_a_panic() {
    let dir = std::env::temp_dir().join(format!("civis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full = std::fs::read(annex("D.4.1.2_device_response.hex")).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        full[..101].to_vec(),
        b"not cbor at all \xff\xfe".to_vec(),
        vec![0x81; 5000],
        vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        Vec::new(),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}"));
        std::fs::write(&f, bytes).unwrap();
        let (st, iaca) = (
            annex("D.5.1_session_transcript_bytes.hex"),
            annex("iaca_certificate.der.hex"),
        );
        let out = civis(&[
            "mdoc",
            "verify",
            "--response",
            p(&f),
            "--session-transcript",
            p(&st),
            "--trust",
            p(&iaca),
            "--at",
            "2021-01-01T00:00:00Z",
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "case {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = verdict(&out);
        assert_eq!(v["verdict"], "reject");
        assert!(
            v["reason"].as_str().unwrap().starts_with("malformed: "),
            "case {i}: {v}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_errors_exit_64() {
    assert_eq!(
        civis(&["mdoc", "verify", "--bogus"]).status.code(),
        Some(64)
    );
    let out = annex_args(&["--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    let out = civis(&[
        "mdoc",
        "verify",
        "--response",
        "/nonexistent/x",
        "--session-transcript",
        "/nonexistent/y",
        "--trust",
        "/nonexistent/z",
        "--at",
        "2021-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn citizen_golden_with_did_key_and_status_list() {
    let (r, st, jwk, req, sl) = (
        golden("device_response.cbor"),
        golden("session_transcript.cbor"),
        golden("issuer_key.jwk.json"),
        golden("device_request.cbor"),
        golden("status_list.cbor"),
    );
    let kid: Value = serde_json::from_str(&std::fs::read_to_string(&jwk).unwrap()).unwrap();
    let uri = format!(
        "{}/status/1",
        kid["kid"].as_str().unwrap().split('#').next().unwrap()
    );
    let status_arg = format!("{uri}={}", p(&sl));
    let base = [
        "mdoc",
        "verify",
        "--response",
        p(&r),
        "--session-transcript",
        p(&st),
        "--trust",
        p(&jwk),
        "--at",
        "2026-06-01T12:00:00Z",
    ];
    let mut with_status = base.to_vec();
    with_status.extend_from_slice(&["--request", p(&req), "--status-list", &status_arg]);
    let out = civis(&with_status);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = verdict(&out);
    assert_eq!(v["doc_type"], "org.civis.citizen.1");
    assert_eq!(v["disclosed"]["org.civis.citizen.1"]["age_over_18"], true);
    // Without the status list the credential's status cannot be known.
    let out = civis(&base);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        verdict(&out)["reason"]
            .as_str()
            .unwrap()
            .contains("status list")
    );
    // Trusting only the Annex D IACA: the citizen issuer is unknown.
    let iaca = annex("iaca_certificate.der.hex");
    let out = civis(&[
        "mdoc",
        "verify",
        "--response",
        p(&r),
        "--session-transcript",
        p(&st),
        "--trust",
        p(&iaca),
        "--at",
        "2026-06-01T12:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        verdict(&out)["reason"]
            .as_str()
            .unwrap()
            .contains("untrusted issuer")
    );
}

#[test]
fn inspect_names_the_structure() {
    for (file, kind) in [
        (annex("D.4.1.2_device_response.hex"), "DeviceResponse"),
        (annex("D.4.1.1_device_request.hex"), "DeviceRequest"),
        (
            annex("D.5.1_session_establishment.hex"),
            "SessionEstablishment",
        ),
        (annex("D.5.2_issuer_auth.hex"), "COSE_Sign1"),
        (golden("status_list.cbor"), "StatusList"),
    ] {
        let out = civis(&["mdoc", "inspect", p(&file)]);
        assert_eq!(out.status.code(), Some(0));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["kind"], kind, "{}", file.display());
    }
    // The MSO inside issuerAuth is decoded in place.
    let out = civis(&["mdoc", "inspect", p(&annex("D.5.2_issuer_auth.hex"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("valueDigests"));
}

#[test]
fn demo_runs_and_reports_every_outcome() {
    let out = civis(&["demo"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ACCEPT  given_name=\"Mira\""), "{text}");
    assert!(text.contains("REJECT  (credential revoked)"));
    assert!(text.contains("does not match its digest"));
    assert!(text.contains("device authentication failed"));
    assert!(text.contains("UNDETERMINED  (registry state is"));
    assert!(text.contains("the card refused birth_date"), "{text}");
    assert!(text.contains("signed on the card"));
    // The card is personalized through the issuer service, and another agency is refused.
    assert!(
        text.contains("LOCK") && text.contains("card locked: true"),
        "{text}"
    );
    assert!(
        text.contains("Tax Office asks for this credential: 404 not_found"),
        "{text}"
    );
    assert!(
        text.contains("anchored it in an update-status transaction"),
        "{text}"
    );
    // E-voting: a wrong PIN gives no pseudonym, the PIN gives one, the same card again is
    // caught at the station; a second station, offline, accepts it, and the signed exchange
    // of records shows the double authentication at both. Stations show only eligibility.
    for line in [
        "A: tap with a wrong PIN: REJECT  (election pseudonym: the card returned no pseudonym)",
        "A: tap with the PIN: ACCEPT  age_over_18=Yes, resident_district=Harbour (",
        "A: the same card again: REJECT  (already authenticated in this election)",
        "double authentication caught at the station",
        "B, offline: the same card: ACCEPT  age_over_18=Yes, resident_district=Harbour (",
        "tally-auth at A: 3 authentications, 1 voter(s), 1 duplicate(s), seen at 2 station(s)",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(!text.contains("vrf_key="), "{text}");
}

/// A demo stopped by SIGTERM in the middle (after its issuer started, before the end) removes
/// its folder — keys and the issuer's database with them — and says why it stopped.
#[test]
fn a_demo_stopped_by_sigterm_leaves_no_folder_behind() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_civis"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("[2]") {
            break;
        }
    }
    // Keep reading, so the demo never writes to a closed pipe.
    let drain = std::thread::spawn(move || lines.count());
    let folders = || -> Vec<PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("civis-demo-{pid}-")))
            })
            .collect()
    };
    let mine = folders();
    assert_eq!(mine.len(), 1, "the demo's folder while it runs: {mine:?}");
    let folder = &mine[0];
    let meta = std::fs::metadata(folder).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    drain.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(!folder.exists(), "{} left behind", folder.display());
}
