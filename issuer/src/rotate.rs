//! Issuer key rotation on chain, with the key committed in advance (pre-rotation).
//!
//! The committed next key becomes current through a `rotate-key` transaction that commits to a
//! freshly generated key after it. New credentials use the new key from the moment the rotation
//! is final; credentials signed before stay valid until their own expiry, because kiosks check
//! that the key was the DID's key at signing time. While a rotation is under way no credential
//! is signed (the chain may already name the next key).
//!
//! No crash may lose the only key the chain will accept next, so every step can be repeated and
//! an interrupted rotation is finished by the anchoring worker before it signs anything else:
//!
//! - **Key files**: the key after next is written first (`<key>.after.jwk`, 0600); after the
//!   transaction is final the key file becomes the new key (with its new `kid`), the next-key
//!   file the key after, and only then the `.after` file goes.
//! - **PKCS#11**: keys are labelled `label#n` by their number in the DID's key history. The key
//!   after next is generated on the token as `label#(n+2)`; after the transaction is final the
//!   service signs with `label#(n+1)` and destroys `label#n`. Three keys on the token mean a
//!   rotation under way; the chain says which of the two first is current.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use civis_core::chain::tx::Op;
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::{DidUrl, KeyCommitment};
use civis_core::jwk::Jwk;
use civis_registry_client::{Client, keyfile};

use crate::agency::{Agency, Keys};
use crate::config::Pkcs11Config;
use crate::error::{Error, Result};
use crate::hsm;
use crate::service::{Actor, CrashPoint, Service};

/// The file that holds the key after next while a key-file rotation is under way.
pub fn after_path(key: &Path) -> PathBuf {
    key.with_extension("after.jwk")
}

fn file(p: &Path) -> impl Fn(civis_registry_client::Error) -> Error + '_ {
    move |e| Error::Config(format!("{}: {e}", p.display()))
}

/// Whether a rotation of this agency's key was started and not finished.
pub fn in_progress(agency: &Agency) -> bool {
    agency.rotating()
}

/// Rotate the agency's key; returns the new key URL once the rotation is final.
pub async fn rotate(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    actor: &Actor,
) -> Result<DidUrl> {
    let _chain = agency.chain.lock().await;
    match (&agency.config.key, &agency.config.pkcs11) {
        (Some(key_path), _) => {
            let after = after_path(key_path);
            if !after.exists() {
                let key = SoftwareKey::generate(&mut rand_core::OsRng);
                keyfile::write_key(&after, &key, None).map_err(file(&after))?;
            }
        }
        (None, Some(h)) => {
            let pin = h.pin()?;
            let keys = hsm::keys(&h.module, &h.token, &pin, &h.label)?;
            if let [_, (next, _)] = keys.as_slice() {
                hsm::generate(
                    &h.module,
                    &h.token,
                    &pin,
                    &hsm::key_label(&h.label, next + 1),
                )?;
            }
        }
        (None, None) => return Err(Error::Corrupt("agency without a key")),
    }
    agency.set_rotating(true);
    // Audited when started: a rotation cut short is finished by the anchoring worker, and the
    // trail still names who asked for it.
    let object = agency.did.to_string();
    let audit = actor.audit(agency, "rotate-key", &object, "-", svc.now());
    svc.store.audit(&audit).await?;
    finish(svc, client, agency).await
}

/// Finish a started rotation (the caller holds the agency's chain lock).
pub async fn finish(svc: &Service, client: &Client, agency: &Agency) -> Result<DidUrl> {
    let kid = match (&agency.config.key, &agency.config.pkcs11) {
        (Some(key_path), _) => finish_files(svc, client, agency, key_path).await?,
        (None, Some(h)) => finish_token(svc, client, agency, h).await?,
        (None, None) => return Err(Error::Corrupt("agency without a key")),
    };
    agency.set_rotating(false);
    Ok(kid)
}

/// Make the chain's key for the DID `next`, committing to `after`; returns the key's index.
async fn on_chain(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    next: &EcPublicKey,
    after: &EcPublicKey,
) -> Result<u32> {
    let current = agency.keys();
    let answer = client
        .did(&agency.did)
        .await
        .map_err(|e| Error::Registry(e.to_string()))?;
    let record = answer.verify(&agency.did)?.record;
    if record.key == *next {
        // The transaction was final before the keys were switched.
        Ok(record.key_index)
    } else if record.key == current.signer.public_key() {
        svc.crash_point(CrashPoint::BeforeRotateTx);
        let op = Op::RotateKey {
            key: next.clone(),
            next: KeyCommitment::to(after),
        };
        crate::anchor::send(svc, client, agency, answer.next_seq, "rotate-key", op, &[]).await?;
        Ok(record.key_index.saturating_add(1))
    } else {
        Err(Error::Conflict(
            "the chain's key for this DID is neither the current nor the next key",
        ))
    }
}

async fn finish_files(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    key_path: &Path,
) -> Result<DidUrl> {
    let after_file = after_path(key_path);
    let next_path = agency
        .config
        .next_key
        .as_deref()
        .ok_or(Error::Corrupt("key file without next_key"))?;
    let (next, _) = keyfile::read_key(next_path).map_err(file(next_path))?;
    let (after, _) = keyfile::read_key(&after_file).map_err(file(&after_file))?;
    if next.public_key() == after.public_key() {
        // Cut short after both files were written: only the `.after` file is left to remove.
        std::fs::remove_file(&after_file)?;
        return Ok(agency.keys().kid);
    }
    let index = on_chain(svc, client, agency, next.public_key(), after.public_key()).await?;
    svc.crash_point(CrashPoint::AfterRotateTx);
    let kid = agency.did.key_url(index);
    let key_json = Jwk::from_private(&next, Some(kid.to_string())).to_json();
    keyfile::write_atomic_mode(key_path, key_json.as_bytes(), 0o600).map_err(file(key_path))?;
    let next_json = Jwk::from_private(&after, None).to_json();
    keyfile::write_atomic_mode(next_path, next_json.as_bytes(), 0o600).map_err(file(next_path))?;
    std::fs::remove_file(&after_file)?;
    agency.rotated(Keys {
        kid: kid.clone(),
        signer: Arc::new(next),
        next: KeyCommitment::to(after.public_key()),
    });
    tracing::info!(agency = agency.id(), kid = %kid, "issuer key rotated");
    Ok(kid)
}

async fn finish_token(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    h: &Pkcs11Config,
) -> Result<DidUrl> {
    let pin = h.pin()?;
    let keys = hsm::keys(&h.module, &h.token, &pin, &h.label)?;
    let [(old, _), (n, next), (_, after), ..] = keys.as_slice() else {
        // Two keys: nothing under way (or the old key is already gone).
        return Ok(agency.keys().kid);
    };
    let index = on_chain(svc, client, agency, next, after).await?;
    svc.crash_point(CrashPoint::AfterRotateTx);
    if index != *n {
        return Err(Error::Conflict(
            "the token's key numbers do not match the DID's key history",
        ));
    }
    let key = hsm::Pkcs11Key::open(&h.module, &h.token, &pin, &hsm::key_label(&h.label, *n))?;
    let kid = agency.did.key_url(index);
    agency.rotated(Keys {
        kid: kid.clone(),
        signer: Arc::new(key),
        next: KeyCommitment::to(after),
    });
    // The old key signs nothing from here on: it goes.
    hsm::destroy(&h.module, &h.token, &pin, &hsm::key_label(&h.label, *old))?;
    tracing::info!(agency = agency.id(), kid = %kid, "issuer key rotated");
    Ok(kid)
}
