//! The service's TOML configuration (`civis issuer run --config FILE`), documented in
//! specs/issuer-api.md § Configuration. Unknown keys are refused so a typo is not a silent
//! default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite:PATH` (embedded default) or `postgres://…`.
    pub database: String,
    /// Registry node URLs, tried in turn.
    pub registry: Vec<String>,
    /// The registry's `genesis.json` (chain id and the governance set cards are given).
    pub genesis: PathBuf,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// How status changes reach the chain.
    #[serde(default)]
    pub anchoring: Anchoring,
    /// The agencies this service issues for.
    #[serde(rename = "agency")]
    pub agencies: Vec<AgencyConfig>,
}

/// Per-request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Sustained requests per second per token.
    pub per_second: u32,
    /// Burst per token.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            per_second: 200,
            burst: 400,
        }
    }
}

/// Status anchoring.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchoring {
    /// Most status changes in one `update-status` transaction.
    pub max_changes_per_tx: usize,
    /// Pause between anchoring rounds when nothing is pending, milliseconds.
    pub idle_ms: u64,
    /// How long to wait for a transaction to be final before asking again, seconds.
    pub wait_secs: u64,
}

impl Default for Anchoring {
    fn default() -> Self {
        Self {
            max_changes_per_tx: 20_000,
            idle_ms: 200,
            wait_secs: 30,
        }
    }
}

/// One agency: its issuer identity, districts, list and card batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Short id (`[a-z0-9-]{1,32}`), bound into every token of this agency.
    pub id: String,
    /// `issuing_authority` in its credentials.
    pub name: String,
    /// `resident_city` in its credentials.
    pub city: String,
    /// Districts an enrollment may name.
    pub districts: Vec<String>,
    /// The issuer DID's current key (JWK file with `d` and `kid`); absent with `pkcs11`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The keys in a PKCS#11 token instead of files (current and next key both on the token).
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
    /// The pre-committed next key (JWK file), used by rotation; with `key` only (a PKCS#11
    /// agency's next key is on the token).
    #[serde(default)]
    pub next_key: Option<PathBuf>,
    /// The status list its credentials point into.
    #[serde(default = "default_list")]
    pub status_list: String,
    /// Entries in that list when the issuer creates it.
    #[serde(default = "default_list_size")]
    pub status_list_size: u64,
    /// Credential validity, days.
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// Elements that need the PIN on its cards.
    #[serde(default)]
    pub pin_elements: Vec<String>,
    /// Card batches: id → file holding the batch transport key (64 hex digits).
    #[serde(default)]
    pub batches: BTreeMap<String, PathBuf>,
    /// A file of refused card keys (one SEC1 hex key per line), e.g. a faulty batch's.
    #[serde(default)]
    pub weak_keys: Option<PathBuf>,
}

/// A signing key in a PKCS#11 token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// A file holding the user PIN (first line).
    pub pin_file: PathBuf,
    /// The base label of the agency's key pairs: key number `n` of the issuer DID is labelled
    /// `label#n`; the lowest number on the token is the current key, the next one the
    /// committed next key.
    pub label: String,
    /// A key URL of the issuer DID (`did:civis:…#key-1`): names the DID. The key number in use
    /// comes from the token's labels.
    pub kid: String,
}

impl Pkcs11Config {
    /// The user PIN: the first line of the PIN file.
    pub fn pin(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.pin_file)
            .map_err(|e| Error::Config(format!("{}: {e}", self.pin_file.display())))?;
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8480))
}

fn default_list() -> String {
    "citizen-1".to_owned()
}

fn default_list_size() -> u64 {
    1 << 20
}

fn default_validity_days() -> u32 {
    5 * 365
}

impl Config {
    /// Read and check a config file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.check()?;
        Ok(config)
    }

    /// Take relative paths from `base` (the config file's folder).
    pub(crate) fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.genesis);
        if let Some(rest) = self.database.strip_prefix("sqlite:")
            && !rest.starts_with('/')
            && !rest.starts_with(":memory:")
        {
            self.database = format!("sqlite:{}", base.join(rest).display());
        }
        for a in &mut self.agencies {
            if let Some(k) = &mut a.key {
                fix(k);
            }
            if let Some(h) = &mut a.pkcs11 {
                fix(&mut h.pin_file);
            }
            if let Some(n) = &mut a.next_key {
                fix(n);
            }
            for p in a.batches.values_mut() {
                fix(p);
            }
            if let Some(w) = &mut a.weak_keys {
                fix(w);
            }
        }
    }

    /// The rules a config must keep.
    pub fn check(&self) -> Result<()> {
        if self.agencies.is_empty() {
            return Err(Error::Config("no [[agency]]".into()));
        }
        if self.registry.is_empty() {
            return Err(Error::Config("no registry URL".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for a in &self.agencies {
            let ok = !a.id.is_empty()
                && a.id.len() <= 32
                && a.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(Error::Config(format!(
                    "agency id {:?}: use [a-z0-9-]{{1,32}}",
                    a.id
                )));
            }
            if !ids.insert(a.id.as_str()) {
                return Err(Error::Config(format!("agency {} twice", a.id)));
            }
            if a.key.is_some() == a.pkcs11.is_some() {
                return Err(Error::Config(format!(
                    "agency {}: give exactly one of key and [agency.pkcs11]",
                    a.id
                )));
            }
            if a.key.is_some() != a.next_key.is_some() {
                return Err(Error::Config(format!(
                    "agency {}: next_key goes with key (a PKCS#11 agency keeps its next key on \
                     the token)",
                    a.id
                )));
            }
            if a.districts.is_empty() {
                return Err(Error::Config(format!("agency {}: no districts", a.id)));
            }
            if a.status_list_size == 0 || a.validity_days == 0 {
                return Err(Error::Config(format!(
                    "agency {}: status_list_size and validity_days must be positive",
                    a.id
                )));
            }
        }
        if self.limits.per_second == 0 || self.limits.burst == 0 || self.limits.max_body < 1024 {
            return Err(Error::Config(
                "limits: per_second and burst must be positive, max_body at least 1024".into(),
            ));
        }
        if self.anchoring.max_changes_per_tx == 0 {
            return Err(Error::Config(
                "anchoring.max_changes_per_tx must be positive".into(),
            ));
        }
        Ok(())
    }
}
