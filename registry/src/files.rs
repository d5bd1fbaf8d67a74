//! A registry directory as `civis registry init` writes it:
//!
//! ```text
//! DIR/genesis.json              the chain's genesis (what kiosks pin)
//! DIR/network.json              validator p2p and HTTP addresses
//! DIR/governance.jwk            governance DID key (private JWK, kid = DID URL)
//! DIR/governance.next.jwk       its pre-rotation next key
//! DIR/validator-I.jwk           validator I's signing key (private JWK)
//! DIR/validator-I/              validator I's data: consensus journals, registry.db
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default first port `init` assigns: validator I gets p2p port `base + I` and HTTP port
/// `base + 100 + I`.
pub const PORT_BASE: u16 = 7100;

/// Where each validator listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One entry per validator, in genesis order.
    pub validators: Vec<Endpoint>,
}

/// A validator's addresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Consensus p2p address.
    pub p2p: SocketAddr,
    /// HTTP API address.
    pub http: SocketAddr,
    /// The validator's public key (Multikey). Genesis validators may leave it out (entry `I`
    /// is genesis validator `I`); a validator added later by a validator-set change needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

pub use civis_registry_client::keyfile::{read_key, write_key};

/// Write a new public file atomically, refusing to overwrite.
fn write_new(path: &Path, text: &str) -> Result<(), Error> {
    if path.exists() {
        return Err(Error::Config(format!(
            "{} exists; refusing to overwrite",
            path.display()
        )));
    }
    write_public(path, text.as_bytes())
}

/// Write a public file atomically (mode 0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    civis_registry_client::keyfile::write_public(path, bytes).map_err(key_error)
}

fn key_error(e: civis_registry_client::Error) -> Error {
    Error::Config(e.to_string())
}

/// Create `path` (and missing parents) readable by its owner only: it holds private keys and
/// validator data, whatever the umask.
pub fn create_private_dir(path: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)?;
    Ok(())
}

/// A registry directory.
#[derive(Debug, Clone)]
pub struct RegistryDir {
    root: PathBuf,
}

impl RegistryDir {
    /// The directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `genesis.json`.
    pub fn genesis_path(&self) -> PathBuf {
        self.root.join("genesis.json")
    }

    /// `network.json`.
    pub fn network_path(&self) -> PathBuf {
        self.root.join("network.json")
    }

    /// The governance key file.
    pub fn governance_key(&self) -> PathBuf {
        self.root.join("governance.jwk")
    }

    /// Validator `i`'s key file.
    pub fn validator_key(&self, i: usize) -> PathBuf {
        self.root.join(format!("validator-{i}.jwk"))
    }

    /// Validator `i`'s data directory.
    pub fn validator_data(&self, i: usize) -> PathBuf {
        self.root.join(format!("validator-{i}"))
    }

    /// Read `genesis.json`.
    pub fn genesis(&self) -> Result<Genesis, Error> {
        let p = self.genesis_path();
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
        Genesis::from_json(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
    }

    /// Replace `network.json` (e.g. to move validators to other ports).
    pub fn set_network(&self, network: &Network) -> Result<(), Error> {
        let text =
            serde_json::to_string_pretty(network).map_err(|e| Error::Config(e.to_string()))?;
        write_public(&self.network_path(), text.as_bytes())
    }

    /// Prepare one more validator (to be voted in by a `set-validators` transaction): a new key
    /// file `validator-I.jwk` and a `network.json` entry with its key, on the next ports of the
    /// layout `init` used. Returns its index and public key.
    pub fn add_validator(
        &self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(usize, SoftwareKey), Error> {
        let mut network = self.network()?;
        let first = network
            .validators
            .first()
            .ok_or_else(|| Error::Config("network.json lists no validators".into()))?;
        let i = network.validators.len();
        let offset = u16::try_from(i).map_err(|_| Error::Config("too many validators".into()))?;
        let (p2p, http) = (
            first.p2p.port().saturating_add(offset),
            first.http.port().saturating_add(offset),
        );
        let key = SoftwareKey::generate(rng);
        write_key(&self.validator_key(i), &key, Some(format!("validator-{i}")))
            .map_err(key_error)?;
        network.validators.push(Endpoint {
            p2p: SocketAddr::new(first.p2p.ip(), p2p),
            http: SocketAddr::new(first.http.ip(), http),
            key: Some(civis_core::did::multikey_encode(key.public_key())),
        });
        self.set_network(&network)?;
        Ok((i, key))
    }

    /// Read `network.json`.
    pub fn network(&self) -> Result<Network, Error> {
        let p = self.network_path();
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
    }

    /// Create a new registry: `validators` validator keys on loopback ports from `port_base`, one governance
    /// member (threshold 1), consensus epochs of `epoch_length` blocks, genesis at `time`.
    /// Refuses to touch an existing `genesis.json`.
    pub fn init(
        &self,
        chain_id: &str,
        validators: usize,
        port_base: u16,
        epoch_length: u64,
        time: i64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Genesis, Error> {
        if validators == 0 || validators > 64 {
            return Err(Error::Config("--validators must be 1..=64".into()));
        }
        if self.genesis_path().exists() {
            return Err(Error::Config(format!(
                "{} exists; refusing to overwrite",
                self.genesis_path().display()
            )));
        }
        create_private_dir(&self.root)?;
        let gov = SoftwareKey::generate(rng);
        let gov_next = SoftwareKey::generate(rng);
        let commitment = KeyCommitment::to(gov_next.public_key());
        let gov_did = Did::from_inception(gov.public_key(), &commitment);
        let mut keys = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..validators {
            let k = SoftwareKey::generate(rng);
            keys.push(k.public_key().clone());
            write_key(&self.validator_key(i), &k, Some(format!("validator-{i}")))
                .map_err(key_error)?;
            let port = |offset: u16| {
                port_base
                    .saturating_add(offset)
                    .saturating_add(u16::try_from(i).unwrap_or(0))
            };
            endpoints.push(Endpoint {
                p2p: SocketAddr::from(([127, 0, 0, 1], port(0))),
                http: SocketAddr::from(([127, 0, 0, 1], port(100))),
                key: None,
            });
        }
        write_key(
            &self.governance_key(),
            &gov,
            Some(gov_did.key_url(1).to_string()),
        )
        .map_err(key_error)?;
        write_key(
            &self.root.join("governance.next.jwk"),
            &gov_next,
            Some(gov_did.key_url(2).to_string()),
        )
        .map_err(key_error)?;
        let network = Network {
            validators: endpoints,
        };
        write_new(
            &self.network_path(),
            &serde_json::to_string_pretty(&network).map_err(|e| Error::Config(e.to_string()))?,
        )?;
        let genesis = Genesis {
            chain_id: chain_id.to_owned(),
            time,
            validators: keys,
            governance: vec![(gov.public_key().clone(), commitment)],
            governance_threshold: 1,
            epoch_length,
        };
        // Check the rules before writing the file everything else pins.
        civis_core::chain::state::State::genesis(&genesis)
            .map_err(|e| Error::Config(format!("genesis: {e}")))?;
        write_new(&self.genesis_path(), &genesis.to_json())?;
        Ok(genesis)
    }
}
