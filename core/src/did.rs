//! The `did:civis` method: self-certifying identifiers with pre-rotation.
//!
//! `did:civis:<id>` where `id = base58btc(SHA-256("civis/did/v1" || 0x00 || K0 || C1))`, `K0` the
//! compressed SEC1 inception key and `C1` the commitment to the next key. A commitment is
//! `SHA-256("civis/next-key/v1" || 0x00 || compressed key)`; a rotation must reveal a key matching
//! the current commitment and commit to the next one. The registry chain holds the history; this
//! module holds the identifier rules and the document model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};

/// Method prefix.
pub const PREFIX: &str = "did:civis:";
/// Multicodec varint for a P-256 public key (0x1200).
const P256_MULTICODEC: [u8; 2] = [0x80, 0x24];

/// A `did:civis` identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Did(String);

/// A commitment to a future key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyCommitment(pub [u8; 32]);

impl KeyCommitment {
    /// Commit to `key`.
    pub fn to(key: &EcPublicKey) -> Self {
        let mut h = Sha256::new();
        h.update(b"civis/next-key/v1\0");
        h.update(key.compressed());
        Self(h.finalize().into())
    }

    /// Whether `key` is the committed key.
    pub fn matches(&self, key: &EcPublicKey) -> bool {
        Self::to(key) == *self
    }

    /// Multibase (base58btc, `z`) text form.
    pub fn to_multibase(&self) -> String {
        format!("z{}", bs58::encode(self.0).into_string())
    }

    /// Parse the multibase text form.
    pub fn from_multibase(s: &str) -> Result<Self> {
        let raw = s
            .strip_prefix('z')
            .and_then(|b| bs58::decode(b).into_vec().ok())
            .ok_or_else(|| Error::malformed("key commitment", "not base58btc multibase"))?;
        if s.get(1..) != Some(bs58::encode(&raw).into_string().as_str()) {
            return Err(Error::malformed(
                "key commitment",
                "not canonical base58btc",
            ));
        }
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::malformed("key commitment", "not 32 bytes"))?;
        Ok(Self(arr))
    }
}

impl Did {
    /// The DID for an inception key and the commitment to its successor.
    pub fn from_inception(key: &EcPublicKey, next: &KeyCommitment) -> Self {
        let mut h = Sha256::new();
        h.update(b"civis/did/v1\0");
        h.update(key.compressed());
        h.update(next.0);
        Self(format!(
            "{PREFIX}{}",
            bs58::encode(h.finalize()).into_string()
        ))
    }

    /// Parse and validate: method `civis`, id a base58btc encoding of 32 bytes.
    pub fn parse(s: &str) -> Result<Self> {
        let id = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::malformed("did:civis", "must start with did:civis:"))?;
        let raw = bs58::decode(id)
            .into_vec()
            .map_err(|_| Error::malformed("did:civis", "identifier is not base58btc"))?;
        if raw.len() != 32 {
            return Err(Error::malformed(
                "did:civis",
                "identifier must encode 32 bytes",
            ));
        }
        // Reject non-canonical encodings (leading zeros written differently).
        if bs58::encode(&raw).into_string() != id {
            return Err(Error::malformed("did:civis", "identifier is not canonical"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether this DID is the one `key` and `next` incept.
    pub fn is_inception_of(&self, key: &EcPublicKey, next: &KeyCommitment) -> bool {
        Self::from_inception(key, next) == *self
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A DID URL naming key `n` of this DID: `did:civis:…#key-n`.
    pub fn key_url(&self, n: u32) -> DidUrl {
        DidUrl {
            did: self.clone(),
            fragment: format!("key-{n}"),
        }
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Did {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Did {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Did> for String {
    fn from(d: Did) -> Self {
        d.0
    }
}

/// A DID URL with a fragment, e.g. a verification method id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DidUrl {
    /// The DID.
    pub did: Did,
    /// The fragment, without `#`.
    pub fragment: String,
}

impl DidUrl {
    /// Parse `did:civis:…#fragment`.
    pub fn parse(s: &str) -> Result<Self> {
        let (did, fragment) = s
            .split_once('#')
            .ok_or_else(|| Error::malformed("DID URL", "no #fragment"))?;
        if fragment.is_empty()
            || !fragment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::malformed(
                "DID URL",
                "fragment must be [A-Za-z0-9_-]+",
            ));
        }
        Ok(Self {
            did: Did::parse(did)?,
            fragment: fragment.to_owned(),
        })
    }

    /// The key number of a `#key-N` URL, only in the canonical form [`Did::key_url`] writes:
    /// `#key-01` or `#key-+1` name no key (the chain never writes them).
    pub fn key_index(&self) -> Option<u32> {
        let n = self.fragment.strip_prefix("key-")?.parse::<u32>().ok()?;
        (self.fragment == format!("key-{n}")).then_some(n)
    }
}

impl fmt::Display for DidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.did, self.fragment)
    }
}

impl TryFrom<String> for DidUrl {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<DidUrl> for String {
    fn from(d: DidUrl) -> Self {
        d.to_string()
    }
}

/// A P-256 key as a Multikey `publicKeyMultibase` (`zDn…`).
pub fn multikey_encode(key: &EcPublicKey) -> String {
    let mut raw = P256_MULTICODEC.to_vec();
    raw.extend(key.compressed());
    format!("z{}", bs58::encode(raw).into_string())
}

/// Parse a P-256 Multikey.
pub fn multikey_decode(s: &str) -> Result<EcPublicKey> {
    let raw = s
        .strip_prefix('z')
        .and_then(|b| bs58::decode(b).into_vec().ok())
        .ok_or_else(|| Error::malformed("Multikey", "not base58btc multibase"))?;
    if s.get(1..) != Some(bs58::encode(&raw).into_string().as_str()) {
        return Err(Error::malformed("Multikey", "not canonical base58btc"));
    }
    match raw.split_at_checked(2) {
        Some((codec, key)) if codec == P256_MULTICODEC => EcPublicKey::from_sec1(key),
        _ => Err(Error::Unsupported("Multikey other than P-256".into())),
    }
}

/// A verification method (W3C DID Core, type `Multikey`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMethod {
    /// `did:civis:…#key-n`.
    pub id: DidUrl,
    /// Always `Multikey`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The controlling DID.
    pub controller: Did,
    /// The key.
    pub public_key_multibase: String,
}

impl VerificationMethod {
    /// A Multikey method for `key`.
    pub fn new(id: DidUrl, controller: Did, key: &EcPublicKey) -> Self {
        Self {
            id,
            kind: "Multikey".into(),
            controller,
            public_key_multibase: multikey_encode(key),
        }
    }

    /// The key.
    pub fn public_key(&self) -> Result<EcPublicKey> {
        if self.kind != "Multikey" {
            return Err(Error::Unsupported(format!(
                "verification method type {}",
                self.kind
            )));
        }
        multikey_decode(&self.public_key_multibase)
    }
}

/// A `did:civis` DID document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidDocument {
    /// JSON-LD context.
    #[serde(rename = "@context")]
    pub context: Vec<String>,
    /// The DID.
    pub id: Did,
    /// Controllers (the DID itself unless delegated).
    pub controller: Vec<Did>,
    /// Keys.
    pub verification_method: Vec<VerificationMethod>,
    /// Keys that may sign credentials.
    pub assertion_method: Vec<DidUrl>,
    /// Keys that may authenticate (sign registry transactions).
    pub authentication: Vec<DidUrl>,
    /// Pre-rotation commitment to the next key (multibase SHA-256), absent once deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key_commitment: Option<String>,
    /// Whether the DID has been deactivated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
}

impl DidDocument {
    /// The document of a freshly incepted DID: key-1 for assertion and authentication.
    pub fn inception(key: &EcPublicKey, next: &KeyCommitment) -> Self {
        Self::current(&Did::from_inception(key, next), 1, key, Some(next), false)
    }

    /// The document of `did` whose current key is `#key-{index}` (the registry's view): the
    /// key asserts and authenticates unless the DID is deactivated.
    pub fn current(
        did: &Did,
        index: u32,
        key: &EcPublicKey,
        next: Option<&KeyCommitment>,
        deactivated: bool,
    ) -> Self {
        let vm = VerificationMethod::new(did.key_url(index), did.clone(), key);
        let usable = if deactivated {
            Vec::new()
        } else {
            vec![vm.id.clone()]
        };
        Self {
            context: vec![
                "https://www.w3.org/ns/did/v1".into(),
                "https://w3id.org/security/multikey/v1".into(),
            ],
            controller: vec![did.clone()],
            assertion_method: usable.clone(),
            authentication: usable,
            verification_method: vec![vm],
            next_key_commitment: next.map(KeyCommitment::to_multibase),
            deactivated,
            id: did.clone(),
        }
    }

    /// Parse JSON and [`validate`](Self::validate).
    pub fn from_json(text: &str) -> Result<Self> {
        if text.len() > 64 * 1024 {
            return Err(Error::TooLarge {
                what: "DID document",
                len: text.len(),
                limit: 64 * 1024,
            });
        }
        let doc: Self = serde_json::from_str(text)
            .map_err(|e| Error::malformed("DID document", e.to_string()))?;
        doc.validate()?;
        Ok(doc)
    }

    /// Structural rules: methods belong to this DID, keys parse, references resolve.
    pub fn validate(&self) -> Result<()> {
        const W: &str = "DID document";
        for vm in &self.verification_method {
            if vm.id.did != self.id {
                return Err(Error::invalid(
                    W,
                    format!("method {} belongs to another DID", vm.id),
                ));
            }
            vm.public_key()?;
        }
        for r in self.assertion_method.iter().chain(&self.authentication) {
            if !self.verification_method.iter().any(|vm| &vm.id == r) {
                return Err(Error::invalid(
                    W,
                    format!("{r} names no verification method"),
                ));
            }
        }
        if let Some(c) = &self.next_key_commitment {
            KeyCommitment::from_multibase(c)?;
        }
        if self.deactivated
            && (!self.assertion_method.is_empty() || self.next_key_commitment.is_some())
        {
            return Err(Error::invalid(
                W,
                "a deactivated DID has no assertion keys and no next key",
            ));
        }
        Ok(())
    }

    /// The key for `url` if it is an assertion method (may sign credentials).
    pub fn assertion_key(&self, url: &DidUrl) -> Option<EcPublicKey> {
        if self.deactivated || !self.assertion_method.contains(url) {
            return None;
        }
        self.verification_method
            .iter()
            .find(|vm| &vm.id == url)
            .and_then(|vm| vm.public_key().ok())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SoftwareKey;

    #[test]
    fn only_the_canonical_key_url_names_a_key() {
        let k0 = SoftwareKey::from_scalar(&[7u8; 32]).unwrap();
        let did = Did::from_inception(k0.public_key(), &KeyCommitment::to(k0.public_key()));
        assert_eq!(did.key_url(12).key_index(), Some(12));
        for fragment in [
            "key-01",
            "key-+1",
            "key-",
            "key-1x",
            "key-4294967296",
            "keys-1",
        ] {
            let url = DidUrl {
                did: did.clone(),
                fragment: fragment.into(),
            };
            assert_eq!(url.key_index(), None, "{fragment}");
        }
    }

    #[test]
    fn inception_is_self_certifying() {
        let k0 = SoftwareKey::from_scalar(&[7u8; 32]).unwrap();
        let k1 = SoftwareKey::from_scalar(&[8u8; 32]).unwrap();
        let c1 = KeyCommitment::to(k1.public_key());
        let doc = DidDocument::inception(k0.public_key(), &c1);
        assert!(doc.id.is_inception_of(k0.public_key(), &c1));
        assert!(!doc.id.is_inception_of(k1.public_key(), &c1));
        assert!(c1.matches(k1.public_key()) && !c1.matches(k0.public_key()));
        let back = DidDocument::from_json(&doc.to_json()).unwrap();
        assert_eq!(back, doc);
        assert_eq!(
            back.assertion_key(&doc.id.key_url(1)).as_ref(),
            Some(k0.public_key())
        );
        assert!(back.assertion_key(&doc.id.key_url(2)).is_none());
    }

    #[test]
    fn parse_refuses_bad_identifiers() {
        for s in [
            "did:web:example.com",
            "did:civis:",
            "did:civis:0OIl",
            "did:civis:3mJr7AoUXx2Wqd",
            "did:civis:1112Ld6uk8Hu9fSpJb7eHBMHdV1QJoVJdY7jVH9E4n8hT",
        ] {
            assert!(Did::parse(s).is_err(), "{s}");
        }
        assert!(DidUrl::parse("did:civis:abc").is_err());
    }

    #[test]
    fn multikey_round_trip() {
        let k = SoftwareKey::from_scalar(&[9u8; 32]).unwrap();
        let mk = multikey_encode(k.public_key());
        assert!(mk.starts_with("zDn"), "{mk}");
        assert_eq!(&multikey_decode(&mk).unwrap(), k.public_key());
    }
}
