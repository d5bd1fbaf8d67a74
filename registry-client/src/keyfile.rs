//! Key files: a private key as a JWK (`d` present, `kid` naming the key, a DID URL for DID
//! keys), and the one atomic writer every secret the project stores goes through.
//!
//! A secret is written to a temporary file created with mode 0600 (never readable by others,
//! not even for a moment), synced, renamed over the target, and the directory synced, so a crash
//! leaves either no file or the whole file.

use std::io::Write as _;
use std::path::Path;

use civis_core::crypto::SoftwareKey;
use civis_core::jwk::Jwk;

use crate::error::Error;

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Write `bytes` to `path` atomically with `mode` (Unix permissions; ignored elsewhere): a
/// temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| file_error(path, "not a file path"))?;
    // A fresh name, created exclusively: an existing file (a stale one, or one planted with
    // looser permissions) is never reused.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(|e| file_error(&tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(path, e));
    }
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(dir, e))?;
    Ok(())
}

/// Write a secret (a private key, a token) atomically with mode 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_mode(path, bytes, 0o600)
}

/// Write a public file (genesis, network, snapshot) atomically with mode 0644.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Write a new private key file, refusing to overwrite an existing one.
pub fn write_key(path: &Path, key: &SoftwareKey, kid: Option<String>) -> Result<(), Error> {
    if path.exists() {
        return Err(file_error(path, "exists; refusing to overwrite a key"));
    }
    write_secret(path, Jwk::from_private(key, kid).to_json().as_bytes())
}

/// Read a private key file; returns the key and its `kid`.
pub fn read_key(path: &Path) -> Result<(SoftwareKey, Option<String>), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let jwk = Jwk::from_json(&text).map_err(|e| file_error(path, e))?;
    let key = jwk
        .private_key()
        .map_err(|e| file_error(path, e))?
        .ok_or_else(|| file_error(path, "not a private key"))?;
    Ok((key, jwk.kid))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("civis-keyfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("mode");
        let path = dir.join("k.jwk");
        let key = SoftwareKey::generate(&mut rand_core::OsRng);
        write_key(&path, &key, Some("k".into())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (back, kid) = read_key(&path).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(kid.as_deref(), Some("k"));
        assert!(write_key(&path, &key, None).is_err());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_public_file_replaces_the_old_one_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("public");
        let path = dir.join("genesis.json");
        write_public(&path, b"one").unwrap();
        write_public(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode & 0o600, mode & 0o022), (0o600, 0));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}
