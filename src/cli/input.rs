//! Reading inputs: files may be raw bytes or hex text.

use std::path::Path;

use anyhow::{Context, Result};

/// Read a file; if its content is hex text (whitespace allowed), decode it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(maybe_hex(raw))
}

/// Decode `raw` as hex text when it is entirely hex digits and whitespace, else return it as is.
pub fn maybe_hex(raw: Vec<u8>) -> Vec<u8> {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if !text.is_empty() && text.len() % 2 == 0 && text.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(bytes) = hex::decode(text) {
            return bytes;
        }
    }
    raw
}
