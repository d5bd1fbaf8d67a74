//! Minting: an issuer turns element values into an `IssuerSigned` (items + signed MSO), and a
//! holder signs or MACs the session with its device key. Randomness, time and keys are parameters.

use ciborium::Value;
use coset::{HeaderBuilder, Label};
use rand_core::CryptoRngCore;

use super::engagement::SessionTranscript;
use super::item::IssuerSignedItem;
use super::mso::{DigestAlgorithm, MobileSecurityObject, StatusRef, ValidityInfo};
use super::response::{DeviceAuth, DeviceNameSpaces, DeviceSigned, IssuerSigned, NameSpaced};
use super::signed::{Mac0, Sign1};
use crate::cbor::{self, CborForm, Tagged};
use crate::cose::{self, Domain, Signer};
use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};
use crate::session;

/// Salt length Civis uses (the standard's minimum is 16).
pub const SALT_LEN: usize = 32;

/// How verifiers find the issuer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKeyId {
    /// A `did:civis` DID URL, put in the protected `kid` header.
    Kid(String),
    /// An X.509 chain (DER, leaf first), put in the unprotected `x5chain` header.
    X5Chain(Vec<Vec<u8>>),
}

/// What to put into a credential.
#[derive(Debug, Clone)]
pub struct IssueParams<'a> {
    /// Document type.
    pub doc_type: &'a str,
    /// Element values by namespace.
    pub name_spaces: &'a NameSpaced<Value>,
    /// The holder's device key (the card key).
    pub device_key: &'a EcPublicKey,
    /// Validity window and signing time.
    pub validity: ValidityInfo,
    /// Status-list reference.
    pub status: Option<StatusRef>,
    /// `keyAuthorizations` for device-signed elements, if any.
    pub key_authorizations: Option<Value>,
}

/// Mint an `IssuerSigned`: salted items under shuffled digest ids, and the issuer's COSE_Sign1
/// over the MSO.
pub fn issue(
    params: &IssueParams<'_>,
    signer: &dyn Signer,
    key_id: &IssuerKeyId,
    rng: &mut dyn CryptoRngCore,
) -> Result<IssuerSigned> {
    if params.validity.valid_until.at < params.validity.valid_from.at {
        return Err(Error::invalid("credential", "validUntil before validFrom"));
    }
    if let IssuerKeyId::X5Chain(chain) = key_id
        && chain.is_empty()
    {
        return Err(Error::invalid("credential", "empty x5chain"));
    }
    if params.doc_type == super::citizen::DOC_TYPE {
        for (ns, elements) in params.name_spaces {
            if ns != super::citizen::NAMESPACE {
                return Err(Error::invalid(
                    "credential",
                    format!("namespace {ns} in a citizen credential"),
                ));
            }
            for (id, value) in elements {
                super::citizen::check_element(id, value)?;
            }
        }
    }
    for (i, (ns, elements)) in params.name_spaces.iter().enumerate() {
        if params
            .name_spaces
            .iter()
            .skip(i.saturating_add(1))
            .any(|(other, _)| other == ns)
        {
            return Err(Error::invalid(
                "credential",
                format!("namespace {ns} given twice"),
            ));
        }
        for (j, (id, _)) in elements.iter().enumerate() {
            if elements
                .iter()
                .skip(j.saturating_add(1))
                .any(|(other, _)| other == id)
            {
                return Err(Error::invalid(
                    "credential",
                    format!("element {ns}/{id} given twice"),
                ));
            }
        }
    }
    let total: usize = params.name_spaces.iter().map(|(_, e)| e.len()).sum();
    if total == 0 {
        return Err(Error::invalid("credential", "no elements"));
    }
    // Shuffled ids so that an id reveals nothing about which element it covers.
    let mut ids: Vec<u64> = (0..total as u64).collect();
    for i in (1..ids.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    let mut ids = ids.into_iter();
    let mut name_spaces = Vec::new();
    let mut value_digests = Vec::new();
    for (ns, elements) in params.name_spaces {
        let mut items = Vec::with_capacity(elements.len());
        let mut digests = Vec::with_capacity(elements.len());
        for (id, value) in elements {
            let mut random = vec![0u8; SALT_LEN];
            rng.fill_bytes(&mut random);
            let digest_id = ids
                .next()
                .ok_or_else(|| Error::invalid("credential", "digest ids"))?;
            let item = Tagged::new(IssuerSignedItem {
                digest_id,
                random,
                element_identifier: id.clone(),
                element_value: value.clone(),
            });
            digests.push((
                digest_id,
                DigestAlgorithm::Sha256.digest(&item.tagged_bytes()),
            ));
            items.push(item);
        }
        digests.sort_by_key(|(id, _)| *id);
        name_spaces.push((ns.clone(), items));
        value_digests.push((ns.clone(), digests));
    }
    let mso = MobileSecurityObject {
        version: "1.0".into(),
        digest_algorithm: DigestAlgorithm::Sha256,
        value_digests,
        device_key: cose::cose_key_value(params.device_key),
        key_authorizations: params.key_authorizations.clone(),
        key_info: None,
        doc_type: params.doc_type.to_owned(),
        validity: params.validity.clone(),
        status: params.status.clone(),
    };
    let payload = Tagged::new(mso).tagged_bytes();
    let (protected, unprotected) = match key_id {
        IssuerKeyId::Kid(kid) => (
            HeaderBuilder::new().key_id(kid.as_bytes().to_vec()),
            coset::Header::default(),
        ),
        IssuerKeyId::X5Chain(chain) => {
            let v = match chain.as_slice() {
                [one] => Value::Bytes(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::Bytes).collect()),
            };
            let mut h = coset::Header::default();
            h.rest.push((Label::Int(cose::X5CHAIN), v));
            (HeaderBuilder::new(), h)
        }
    };
    let sign1 = cose::sign1(
        signer,
        Domain::IsoIssuerAuth,
        protected,
        unprotected,
        Some(payload),
        None,
    )?;
    Ok(IssuerSigned {
        name_spaces: Some(name_spaces),
        issuer_auth: Sign1::new(sign1),
    })
}

/// Keep only the requested elements of an `IssuerSigned` (selective disclosure keeps the
/// original item bytes, so digests still match).
pub fn select(issuer_signed: &IssuerSigned, wanted: impl Fn(&str, &str) -> bool) -> IssuerSigned {
    let name_spaces = issuer_signed.name_spaces.as_ref().map(|all| {
        all.iter()
            .filter_map(|(ns, items)| {
                let kept: Vec<_> = items
                    .iter()
                    .filter(|i| wanted(ns, &i.inner().element_identifier))
                    .cloned()
                    .collect();
                (!kept.is_empty()).then(|| (ns.clone(), kept))
            })
            .collect::<Vec<_>>()
    });
    // IssuerNameSpaces needs at least one namespace: with nothing selected it is left out.
    let name_spaces = name_spaces.filter(|ns| !ns.is_empty());
    IssuerSigned {
        name_spaces,
        issuer_auth: issuer_signed.issuer_auth.clone(),
    }
}

/// Device side: sign DeviceAuthentication with the device key (`deviceSignature`).
pub fn sign_device(
    signer: &dyn Signer,
    transcript: &SessionTranscript,
    doc_type: &str,
    name_spaces: DeviceNameSpaces,
) -> Result<DeviceSigned> {
    let name_spaces = Tagged::new(name_spaces);
    let da = transcript.device_authentication_bytes(doc_type, &name_spaces);
    let sig = cose::sign1(
        signer,
        Domain::IsoDeviceAuth,
        HeaderBuilder::new(),
        coset::Header::default(),
        None,
        Some(&da),
    )?;
    Ok(DeviceSigned {
        name_spaces,
        device_auth: DeviceAuth::Signature(Sign1::new(sig)),
    })
}

/// Device side: MAC DeviceAuthentication with EMacKey (`deviceMac`), from the device's static
/// key and the reader's ephemeral key.
pub fn mac_device(
    device_key: &SoftwareKey,
    reader_ephemeral: &EcPublicKey,
    transcript: &SessionTranscript,
    doc_type: &str,
    name_spaces: DeviceNameSpaces,
) -> Result<DeviceSigned> {
    use hmac::{Hmac, Mac};
    let name_spaces = Tagged::new(name_spaces);
    let da = transcript.device_authentication_bytes(doc_type, &name_spaces);
    let key = session::emac_key(device_key, reader_ephemeral, &transcript.tagged_bytes());
    let mut mac0 = coset::CoseMac0Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(coset::iana::Algorithm::HMAC_256_256)
                .build(),
        )
        .build();
    let tbs = coset::mac_structure_data(
        coset::MacContext::CoseMac0,
        mac0.protected.clone(),
        b"",
        &da,
    );
    let mut h = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_ref())
        .map_err(|_| Error::invalid("EMacKey", "bad length"))?;
    h.update(&tbs);
    mac0.tag = h.finalize().into_bytes().to_vec();
    Ok(DeviceSigned {
        name_spaces,
        device_auth: DeviceAuth::Mac(Mac0::new(mac0)),
    })
}

/// Encode an `IssuerSigned` for storage (e.g. on the card).
pub fn encode_issuer_signed(issuer_signed: &IssuerSigned) -> Vec<u8> {
    cbor::encode(&issuer_signed.to_value())
}
