//! An agency at run time: its issuer identity and signing key, card batches with their
//! transport keys, and the weak-key list — loaded once from the config's files.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use civis_core::card::TransportKey;
use civis_core::cose::Signer;
use civis_core::crypto::EcPublicKey;
use civis_core::did::{DidUrl, KeyCommitment};
use civis_registry_client::keyfile;

use crate::config::AgencyConfig;
use crate::error::{Error, Result};

/// The agency's current key: it changes only by rotation.
#[derive(Clone)]
pub struct Keys {
    /// The key URL credentials name (`did:civis:…#key-N`).
    pub kid: DidUrl,
    /// The signing key (a key file or a PKCS#11 token).
    pub signer: Arc<dyn Signer + Send + Sync>,
    /// Commitment to the next key.
    pub next: KeyCommitment,
}

/// An agency ready to issue.
pub struct Agency {
    /// Its config.
    pub config: AgencyConfig,
    /// Its issuer DID (stable across rotations).
    pub did: civis_core::did::Did,
    keys: std::sync::RwLock<Keys>,
    /// Held by whoever signs chain transactions for the agency (the anchoring worker, a
    /// rotation), so one transaction is in flight at a time.
    pub chain: tokio::sync::Mutex<()>,
    /// A rotation was started and is not finished: no credential is signed until it is (the
    /// chain may already name the next key).
    rotating: std::sync::atomic::AtomicBool,
    /// Batch id → transport key.
    batches: BTreeMap<String, TransportKey>,
    /// Refused card keys (uncompressed SEC1).
    weak_keys: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for Agency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agency")
            .field("id", &self.config.id)
            .field("did", &self.did.to_string())
            .finish_non_exhaustive()
    }
}

impl Agency {
    /// Load the agency's key files, transport keys and weak-key list.
    pub fn load(config: &AgencyConfig) -> Result<Self> {
        let cfg = |e: &dyn std::fmt::Display| Error::Config(format!("agency {}: {e}", config.id));
        let (signer, kid, next, rotating) = match (&config.key, &config.pkcs11) {
            (Some(path), None) => {
                let (key, kid) = keyfile::read_key(path).map_err(|e| cfg(&e))?;
                let kid =
                    kid.ok_or_else(|| cfg(&"key file has no kid (run `civis issuer init`)"))?;
                let kid = DidUrl::parse(&kid).map_err(|e| cfg(&format!("kid: {e}")))?;
                let next_path = config
                    .next_key
                    .as_deref()
                    .ok_or_else(|| cfg(&"no next_key"))?;
                let (next, _) = keyfile::read_key(next_path).map_err(|e| cfg(&e))?;
                let rotating = crate::rotate::after_path(path).exists();
                let signer: Arc<dyn Signer + Send + Sync> = Arc::new(key);
                (signer, kid, next.public_key().clone(), rotating)
            }
            (None, Some(h)) => {
                let pin = h.pin()?;
                let did = DidUrl::parse(&h.kid)
                    .map_err(|e| cfg(&format!("kid: {e}")))?
                    .did;
                let keys = crate::hsm::keys(&h.module, &h.token, &pin, &h.label)?;
                let [(n, _), (_, next), ..] = keys.as_slice() else {
                    return Err(cfg(&format!(
                        "the token has not both the current and the next key ({0}#N, {0}#N+1); \
                         run `civis issuer init --pkcs11-…`",
                        h.label
                    )));
                };
                let label = crate::hsm::key_label(&h.label, *n);
                let key = crate::hsm::Pkcs11Key::open(&h.module, &h.token, &pin, &label)?;
                let signer: Arc<dyn Signer + Send + Sync> = Arc::new(key);
                (signer, did.key_url(*n), next.clone(), keys.len() > 2)
            }
            _ => return Err(cfg(&"give exactly one of key and [agency.pkcs11]")),
        };
        let mut batches = BTreeMap::new();
        for (id, path) in &config.batches {
            batches.insert(id.clone(), read_transport_key(path)?);
        }
        let mut weak_keys = HashSet::new();
        if let Some(path) = &config.weak_keys {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = hex::decode(line)
                    .ok()
                    .and_then(|b| EcPublicKey::from_sec1(&b).ok())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{} line {}: not a P-256 key",
                            path.display(),
                            n + 1
                        ))
                    })?;
                weak_keys.insert(key.uncompressed().to_vec());
            }
        }
        Ok(Self {
            config: config.clone(),
            did: kid.did.clone(),
            keys: std::sync::RwLock::new(Keys {
                kid,
                signer,
                next: KeyCommitment::to(&next),
            }),
            rotating: std::sync::atomic::AtomicBool::new(rotating),
            chain: tokio::sync::Mutex::new(()),
            batches,
            weak_keys,
        })
    }

    /// The current key.
    pub fn keys(&self) -> Keys {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switch to the key a rotation made current.
    pub fn rotated(&self, keys: Keys) {
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Whether a rotation is under way (no credential is signed meanwhile).
    pub fn rotating(&self) -> bool {
        self.rotating.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Mark a rotation as started or finished.
    pub fn set_rotating(&self, on: bool) {
        self.rotating.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The agency's short id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Every batch's transport key (to open a locked card's sealed facts, whose batch is
    /// inside them).
    pub fn transport_keys(&self) -> impl Iterator<Item = &TransportKey> {
        self.batches.values()
    }

    /// A batch's transport key.
    pub fn transport_key(&self, batch: &str) -> Option<&TransportKey> {
        self.batches.get(batch)
    }

    /// Whether a card key is on the weak-key list.
    pub fn is_weak(&self, key: &EcPublicKey) -> bool {
        self.weak_keys.contains(key.uncompressed().as_slice())
    }
}

/// Read a transport key file: 64 hex digits.
pub fn read_transport_key(path: &std::path::Path) -> Result<TransportKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| Error::Config(format!("{}: not 64 hex digits", path.display())))?;
    Ok(TransportKey(key))
}
