//! `did:civis` for the [`ssi`] crate (feature `ssi`): a DID resolver that answers from a
//! verified kiosk snapshot, so that `ssi` can verify W3C credentials (VC-JOSE-COSE, ES256)
//! issued by a `did:civis` offline, and the two checks `ssi` leaves out.
//!
//! The documents come from the kiosk subtree, which a kiosk only holds after the light client
//! checked it against a certified header: every key the DID ever had is listed (old keys still
//! verify what they signed), each as a P-256 Multikey usable for assertions. `ssi` verifies the
//! signature and the validity period; it does not check that the signing key belongs to the
//! credential's issuer nor that it is an assertion key — [`DidCivis::check_issuer_binding`] does.

use std::collections::BTreeMap;

use ssi::dids::resolution::{Error as ResolutionError, Options, Output};
use ssi::dids::{DIDMethod, DIDMethodResolver};

use crate::chain::light::KioskSnapshot;
use crate::chain::state::Tree;
use crate::chain::table::Table;
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidDocument, DidUrl, VerificationMethod};
use crate::error::{Error, Result};

/// The `did:civis` method backed by a snapshot.
#[derive(Debug, Clone, Default)]
pub struct DidCivis {
    documents: BTreeMap<Did, DidDocument>,
}

impl DidCivis {
    /// From a verified kiosk snapshot.
    pub fn from_snapshot(snapshot: &KioskSnapshot) -> Self {
        Self::from_tree(snapshot.tree())
    }

    /// From a kiosk subtree (the caller vouches that it was verified).
    pub fn from_tree(tree: &Tree) -> Self {
        let mut keys: BTreeMap<Did, Vec<(u32, DidUrl, EcPublicKey)>> = BTreeMap::new();
        for e in tree.entries() {
            if e.table != Table::Key {
                continue;
            }
            let (Ok(url), Ok(key)) = (
                std::str::from_utf8(&e.key)
                    .map_err(|_| Error::malformed("key entry", "not UTF-8"))
                    .and_then(DidUrl::parse),
                crate::chain::state::records::decode_key_value(&e.value).map(|(k, _)| k),
            ) else {
                continue;
            };
            let Some(n) = url.key_index() else {
                continue;
            };
            keys.entry(url.did.clone()).or_default().push((n, url, key));
        }
        let documents = keys
            .into_iter()
            .filter_map(|(did, mut ks)| {
                ks.sort_by_key(|(n, _, _)| *n);
                let (_, _, first) = ks.first()?;
                let mut doc = DidDocument::current(&did, 1, first, None, false);
                doc.verification_method = ks
                    .iter()
                    .map(|(_, url, k)| VerificationMethod::new(url.clone(), did.clone(), k))
                    .collect();
                doc.assertion_method = ks.iter().map(|(_, url, _)| url.clone()).collect();
                // Registry transactions are signed with the current key only.
                doc.authentication = ks
                    .last()
                    .map(|(_, u, _)| vec![u.clone()])
                    .unwrap_or_default();
                Some((did, doc))
            })
            .collect();
        Self { documents }
    }

    /// The document of `did`, if the snapshot knows it.
    pub fn document(&self, did: &Did) -> Option<&DidDocument> {
        self.documents.get(did)
    }

    /// The checks `ssi` leaves out: the signing key `kid` belongs to the credential's `issuer`
    /// and is one of its assertion keys.
    pub fn check_issuer_binding(&self, kid: &str, issuer: &str) -> Result<EcPublicKey> {
        const W: &str = "credential issuer binding";
        let url = DidUrl::parse(kid)?;
        if url.did.as_str() != issuer {
            return Err(Error::invalid(
                W,
                format!("signed by {}, but the issuer is {issuer}", url.did),
            ));
        }
        let doc = self
            .documents
            .get(&url.did)
            .ok_or_else(|| Error::invalid(W, format!("{} is not in the registry", url.did)))?;
        doc.assertion_key(&url)
            .ok_or_else(|| Error::invalid(W, format!("{kid} is not an assertion key")))
    }
}

impl DIDMethod for DidCivis {
    const DID_METHOD_NAME: &'static str = "civis";
}

impl DIDMethodResolver for DidCivis {
    async fn resolve_method_representation<'a>(
        &'a self,
        method_specific_id: &'a str,
        _options: Options,
    ) -> std::result::Result<Output<Vec<u8>>, ResolutionError> {
        let did = Did::parse(&format!("did:civis:{method_specific_id}"))
            .map_err(|_| ResolutionError::InvalidMethodSpecificId(method_specific_id.to_owned()))?;
        let doc = self.documents.get(&did).ok_or(ResolutionError::NotFound)?;
        Ok(Output::from_content(
            doc.to_json().into_bytes(),
            Some("application/did+json".to_owned()),
        ))
    }
}
