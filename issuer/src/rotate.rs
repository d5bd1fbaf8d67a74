//! Issuer key rotation on chain, with the key committed in advance (pre-rotation).
//!
//! The committed next key (the config's `next_key` file) becomes current through a
//! `rotate-key` transaction that commits to a freshly generated key after it. New credentials
//! use the new key from the moment the rotation is final; credentials signed before stay valid
//! until their own expiry, because kiosks check that the key was the DID's key at signing time.
//!
//! Files, so that no crash loses the only key the chain will accept next: the key after next is
//! written first (`<key>.after.jwk`, 0600); after the transaction is final the key file becomes
//! the new key (with its new `kid`), the next-key file the key after, and only then the `.after`
//! file goes. Every step can be repeated: an interrupted rotation is finished by the anchoring
//! worker before it signs anything else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use civis_core::chain::tx::Op;
use civis_core::crypto::SoftwareKey;
use civis_core::did::{DidUrl, KeyCommitment};
use civis_core::jwk::Jwk;
use civis_registry_client::{Client, keyfile};

use crate::agency::{Agency, Keys};
use crate::error::{Error, Result};
use crate::service::{Actor, Service};

fn after_path(key: &Path) -> PathBuf {
    key.with_extension("after.jwk")
}

fn file(p: &Path) -> impl Fn(civis_registry_client::Error) -> Error + '_ {
    move |e| Error::Config(format!("{}: {e}", p.display()))
}

/// Whether a rotation of this agency's key was started and not finished.
pub fn in_progress(agency: &Agency) -> bool {
    agency
        .config
        .key
        .as_deref()
        .is_some_and(|k| after_path(k).exists())
}

/// Rotate the agency's key; returns the new key URL once the rotation is final.
pub async fn rotate(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    actor: &Actor,
) -> Result<DidUrl> {
    let key_path = agency.config.key.as_deref().ok_or(Error::Conflict(
        "rotation of a PKCS#11 key is not supported yet",
    ))?;
    let _chain = agency.chain.lock().await;
    let after = after_path(key_path);
    if !after.exists() {
        let key = SoftwareKey::generate(&mut rand_core::OsRng);
        keyfile::write_key(&after, &key, None).map_err(file(&after))?;
    }
    let kid = finish(svc, client, agency).await?;
    let object = kid.to_string();
    let audit = actor.audit(agency, "rotate-key", &object, "-", svc.now());
    svc.store.audit(&audit).await?;
    Ok(kid)
}

/// Finish a started rotation (the caller holds the agency's chain lock).
pub async fn finish(svc: &Service, client: &Client, agency: &Agency) -> Result<DidUrl> {
    let key_path = agency
        .config
        .key
        .as_deref()
        .ok_or(Error::Corrupt("rotation without a key file"))?;
    let after_file = after_path(key_path);
    let next_path = &agency.config.next_key;
    let (next, _) = keyfile::read_key(next_path).map_err(file(next_path))?;
    let (after, _) = keyfile::read_key(&after_file).map_err(file(&after_file))?;
    let current = agency.keys();
    if next.public_key() == after.public_key() {
        // Cut short after both files were written: only the `.after` file is left to remove.
        std::fs::remove_file(&after_file)?;
        return Ok(current.kid);
    }
    let answer = client
        .did(&agency.did)
        .await
        .map_err(|e| Error::Registry(e.to_string()))?;
    let record = answer.verify(&agency.did)?.record;
    let index = if record.key == *next.public_key() {
        // The transaction was final before the files were switched.
        record.key_index
    } else if record.key == current.signer.public_key() {
        let op = Op::RotateKey {
            key: next.public_key().clone(),
            next: KeyCommitment::to(after.public_key()),
        };
        crate::anchor::send(svc, client, agency, answer.next_seq, "rotate-key", op, &[]).await?;
        record.key_index.saturating_add(1)
    } else {
        return Err(Error::Conflict(
            "the chain's key for this DID is neither the current nor the next key",
        ));
    };
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
