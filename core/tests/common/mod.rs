//! Helpers shared by the conformance tests: vectors are files, loaded from `../shared/vectors`
//! (the public vectors) or `specs/vectors` (Civis's own golden vectors).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/vectors/<rel>`, beside the clone; overridable with `CIVIS_SHARED_VECTORS`.
pub fn shared(rel: &str) -> PathBuf {
    let base = std::env::var_os("CIVIS_SHARED_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/vectors"));
    let p = base.join(rel);
    assert!(
        p.exists(),
        "missing vector file {} (is ../shared beside the clone?)",
        p.display()
    );
    p
}

/// `specs/vectors/<rel>`.
pub fn own(rel: &str) -> PathBuf {
    workspace().join("specs/vectors").join(rel)
}

/// Hex text → bytes; whitespace ignored.
pub fn hex_text(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(clean).expect("hex")
}

/// A hex file → bytes.
pub fn read_hex(p: PathBuf) -> Vec<u8> {
    hex_text(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// Annex D keys from `keys.txt`: name → bytes.
pub fn annex_d_key(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(shared("iso18013-5/keys.txt")).unwrap();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == name
        {
            return hex::decode(v.trim()).unwrap();
        }
    }
    panic!("no key {name} in keys.txt")
}
