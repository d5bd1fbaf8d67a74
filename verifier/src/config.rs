//! The running kiosk's configuration (`civis kiosk run --config kiosk.toml`), specified in
//! specs/kiosk-screen.md. Relative paths are relative to the config file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::messages::Lang;
use crate::policy::{DEFAULT_MAX_AGE_SECS, KioskPolicy};

/// Why a config is refused.
#[derive(Debug, thiserror::Error)]
#[error("kiosk config {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The NFC reader and the kiosk's accredited ReaderAuth key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// PC/SC reader name or libnfc connstring.
    pub name: String,
    /// The kiosk's ReaderAuth key (JWK file).
    pub key: PathBuf,
    /// The kiosk's accreditation statement (as recorded on chain).
    pub accreditation: PathBuf,
}

/// A kiosk's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskConfig {
    /// Where the screen is served; loopback by default (the kiosk's own browser).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The kiosk's database.
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// The registry's genesis.json.
    pub genesis: PathBuf,
    /// Registry node URLs, tried in turn; none: the kiosk never syncs by itself.
    #[serde(default)]
    pub registries: Vec<String>,
    /// Seconds between background syncs.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// The policy (`age-over-18`, `resident-of:D`, `service:NAME=E,E`).
    pub policy: String,
    /// Oldest snapshot a verdict may rest on.
    #[serde(default = "default_max_age")]
    pub max_age_secs: i64,
    /// How long before the snapshot goes stale the screen warns.
    #[serde(default = "default_warn")]
    pub warn_before_stale_secs: i64,
    /// How long a verdict stays on screen (then it and its elements are dropped).
    #[serde(default = "default_verdict_secs")]
    pub verdict_secs: i64,
    /// The screen's language until a resident picks another (`en`, `de`, `ko`).
    #[serde(default = "default_language")]
    pub language: String,
    /// The NFC reader, when the kiosk has one.
    pub reader: Option<ReaderConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8480))
}
fn default_db() -> PathBuf {
    "kiosk.db".into()
}
fn default_sync_interval() -> u64 {
    60
}
fn default_max_age() -> i64 {
    DEFAULT_MAX_AGE_SECS
}
fn default_warn() -> i64 {
    3600
}
fn default_verdict_secs() -> i64 {
    8
}
fn default_language() -> String {
    "en".into()
}

impl KioskConfig {
    /// Read and check `path`; relative paths in it become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut c: Self = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut c.db);
        fix(&mut c.genesis);
        if let Some(r) = &mut c.reader {
            fix(&mut r.key);
            fix(&mut r.accreditation);
        }
        c.kiosk_policy().map_err(|e| err(e.to_string()))?;
        if c.max_age_secs <= 0 || c.verdict_secs <= 0 || c.sync_interval_secs == 0 {
            return Err(err(
                "max_age_secs, verdict_secs and sync_interval_secs must be positive".into(),
            ));
        }
        // The screen shows verdicts with the elements they disclose and takes phones' answers:
        // only the kiosk's own browser may reach it (specs/kiosk-screen.md §5).
        if !c.listen.ip().is_loopback() {
            return Err(err(format!(
                "listen = {}: the kiosk screen serves the kiosk's own browser only; use a loopback address (127.0.0.1 or [::1])",
                c.listen
            )));
        }
        if !["en", "de", "ko"].contains(&c.language.as_str()) {
            return Err(err(format!("language {:?}: use en, de or ko", c.language)));
        }
        Ok(c)
    }

    /// The configured policy with its maximum age.
    pub fn kiosk_policy(&self) -> Result<KioskPolicy, crate::policy::BadPolicy> {
        let mut p = KioskPolicy::parse(&self.policy)?;
        p.max_age_secs = self.max_age_secs;
        Ok(p)
    }

    /// The default language.
    pub fn lang(&self) -> Lang {
        Lang::from_tag(&self.language)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(name: &str, text: &str) -> Result<KioskConfig, ConfigError> {
        let dir = std::env::temp_dir().join(format!("civis-kiosk-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let c = KioskConfig::load(&path);
        let _ = std::fs::remove_file(&path);
        c
    }

    #[test]
    fn the_screen_listens_on_loopback_only() {
        let base = "genesis = \"g.json\"\npolicy = \"age-over-18\"\n";
        assert!(load("ok.toml", base).is_ok());
        assert!(load("v6.toml", &format!("listen = \"[::1]:0\"\n{base}")).is_ok());
        for listen in ["0.0.0.0:8480", "[::]:8480", "192.168.1.20:8480"] {
            let e = load("open.toml", &format!("listen = \"{listen}\"\n{base}")).unwrap_err();
            assert!(e.to_string().contains("loopback"), "{listen}: {e}");
        }
    }
}
