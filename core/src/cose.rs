//! COSE_Sign1 with ES256, on `coset`.
//!
//! Profile: `alg` must be ES256 (-7) and must sit in the **protected** header (an `alg` only in the
//! unprotected header is refused with [`Error::Unsupported`] naming that reason, never tried as a
//! signature). Input is tag 18 or untagged; any other tag is refused.
//!
//! Every Civis signature has a [`Domain`]: for ISO 18013-5 structures the payload itself carries
//! the context (`"DeviceAuthentication"`, `"ReaderAuthentication"`, the MSO inside tag 24) and the
//! external AAD stays empty as the standard requires; Civis's own structures put a distinct,
//! versioned context string into the external AAD so that no signature can be replayed as another
//! type.

use ciborium::Value;
use coset::iana::{self, EnumI64};
use coset::{
    AsCborValue, CoseSign1, CoseSign1Builder, Header, HeaderBuilder, RegisteredLabelWithPrivate,
};

use crate::cbor::{self, Limits};
use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};

/// Largest COSE_Sign1 accepted (an issuerAuth with an x5chain and a large MSO fits well).
pub const MAX_SIGN1_LEN: usize = 256 * 1024;

/// COSE header label for `x5chain` (RFC 9360).
pub const X5CHAIN: i64 = 33;

/// What a signature is for. Each variant yields its own external AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// ISO 18013-5 issuerAuth over the MobileSecurityObject (AAD empty per the standard).
    IsoIssuerAuth,
    /// ISO 18013-5 deviceSignature over DeviceAuthentication (AAD empty per the standard).
    IsoDeviceAuth,
    /// ISO 18013-5 readerAuth over ReaderAuthentication (AAD empty per the standard).
    IsoReaderAuth,
    /// IETF Token Status List CWT (AAD empty per the draft).
    StatusListCwt,
    /// Civis: a governance statement accrediting a kiosk.
    KioskAccreditation,
    /// Civis: a registry transaction.
    RegistryTransaction,
    /// Civis: a governance member's approval of another member's registry operation.
    GovernanceApproval,
    /// Civis: a polling station's signed pseudonym records of an election (evote.md §5).
    EvoteRecords,
}

impl Domain {
    /// The external AAD bound into the Sig_structure.
    pub fn external_aad(self) -> &'static [u8] {
        match self {
            Self::IsoIssuerAuth
            | Self::IsoDeviceAuth
            | Self::IsoReaderAuth
            | Self::StatusListCwt => b"",
            Self::KioskAccreditation => b"civis/kiosk-accreditation/v1",
            Self::RegistryTransaction => b"civis/registry-transaction/v1",
            Self::GovernanceApproval => b"civis/governance-approval/v1",
            Self::EvoteRecords => b"civis/evote-records/v1",
        }
    }
}

/// Something that can produce ES256 signatures: a software key, the card, an HSM.
pub trait Signer {
    /// The public key that verifies this signer's signatures.
    fn public_key(&self) -> EcPublicKey;
    /// Sign `tbs` (the full COSE Sig_structure bytes); returns r || s (64 bytes).
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>>;
}

impl Signer for SoftwareKey {
    fn public_key(&self) -> EcPublicKey {
        SoftwareKey::public_key(self).clone()
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>> {
        Ok(self.sign_es256(tbs).to_vec())
    }
}

/// Decode a COSE_Sign1 (tag 18 or untagged), within [`MAX_SIGN1_LEN`].
pub fn decode_sign1(bytes: &[u8]) -> Result<CoseSign1> {
    decode_sign1_within(bytes, MAX_SIGN1_LEN)
}

/// Decode a COSE_Sign1 within a caller-chosen size limit (e.g. large Status List Tokens).
pub fn decode_sign1_within(bytes: &[u8], max_len: usize) -> Result<CoseSign1> {
    let value = cbor::decode("COSE_Sign1", bytes, Limits::new(max_len))?;
    sign1_from_value(value)
}

/// Interpret a decoded CBOR value as a COSE_Sign1 (tag 18 or untagged).
pub fn sign1_from_value(value: Value) -> Result<CoseSign1> {
    let inner = match value {
        Value::Tag(18, inner) => *inner,
        Value::Tag(98, _) => {
            return Err(Error::Unsupported(
                "COSE_Sign (tag 98, multiple signers) is not a COSE_Sign1".into(),
            ));
        }
        Value::Tag(tag, _) => {
            return Err(Error::malformed(
                "COSE_Sign1",
                format!("unexpected CBOR tag {tag}"),
            ));
        }
        other => other,
    };
    CoseSign1::from_cbor_value(inner).map_err(|e| Error::malformed("COSE_Sign1", e.to_string()))
}

/// Encode a COSE_Sign1 untagged (the mdoc form).
pub fn encode_sign1(sign1: &CoseSign1) -> Vec<u8> {
    cbor::encode(&sign1_to_value(sign1))
}

/// A COSE_Sign1 as a CBOR value (untagged).
pub fn sign1_to_value(sign1: &CoseSign1) -> Value {
    sign1.clone().to_cbor_value().unwrap_or(Value::Null)
}

/// Header labels Civis understands and so may see marked critical: `x5chain` and the kiosk
/// accreditation in ReaderAuth. (RFC 9052's own labels 1–7 may never be marked critical.)
const UNDERSTOOD_CRITICAL: [i64; 2] = [X5CHAIN, crate::kiosk::READER_AUTH_LABEL];

/// Enforce `crit` (RFC 9052 §3.1): it may only be protected, and every label it lists must be
/// one this verifier understands; otherwise the message is refused, never verified with a
/// parameter silently ignored.
fn check_crit(sign1: &CoseSign1) -> Result<()> {
    if !sign1.unprotected.crit.is_empty() {
        return Err(Error::malformed(
            "COSE_Sign1",
            "crit must be in the protected header",
        ));
    }
    for label in &sign1.protected.header.crit {
        let value = match label {
            RegisteredLabelWithPrivate::Assigned(p) => p.to_i64(),
            RegisteredLabelWithPrivate::PrivateUse(v) => *v,
            RegisteredLabelWithPrivate::Text(t) => {
                return Err(Error::Unsupported(format!(
                    "critical header parameter {t:?} is not understood"
                )));
            }
        };
        if (1..=7).contains(&value) {
            return Err(Error::malformed(
                "COSE_Sign1",
                format!("header parameter {value} may not be marked critical"),
            ));
        }
        if !UNDERSTOOD_CRITICAL.contains(&value) {
            return Err(Error::Unsupported(format!(
                "critical header parameter {value} is not understood"
            )));
        }
    }
    Ok(())
}

/// Check the header profile every verification applies: ES256 in the protected header, and
/// `crit` naming only parameters Civis understands.
pub fn check_alg(sign1: &CoseSign1) -> Result<()> {
    check_crit(sign1)?;
    match &sign1.protected.header.alg {
        Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256)) => Ok(()),
        Some(other) => Err(Error::Unsupported(format!(
            "COSE algorithm {} (only ES256 is accepted)",
            alg_name(other)
        ))),
        None if sign1.unprotected.alg.is_some() => Err(Error::Unsupported(
            "alg is only in the unprotected header; it must be protected".into(),
        )),
        None => Err(Error::malformed(
            "COSE_Sign1",
            "no alg in the protected header",
        )),
    }
}

fn alg_name(alg: &coset::Algorithm) -> String {
    match alg {
        RegisteredLabelWithPrivate::Assigned(a) => format!("{}", a.to_i64()),
        RegisteredLabelWithPrivate::PrivateUse(v) => format!("{v}"),
        RegisteredLabelWithPrivate::Text(t) => t.clone(),
    }
}

/// Verify with an explicit external AAD (for foreign structures such as the COSE WG examples).
/// `detached` supplies the payload when the COSE_Sign1 carries `nil`.
pub fn verify_sign1_with_aad(
    sign1: &CoseSign1,
    key: &EcPublicKey,
    aad: &[u8],
    detached: Option<&[u8]>,
) -> Result<()> {
    check_alg(sign1)?;
    let tbs = match (&sign1.payload, detached) {
        (Some(_), None) => sign1.tbs_data(aad),
        (None, Some(payload)) => sign1.tbs_detached_data(payload, aad),
        (Some(_), Some(_)) => {
            return Err(Error::malformed(
                "COSE_Sign1",
                "payload both attached and detached",
            ));
        }
        (None, None) => return Err(Error::malformed("COSE_Sign1", "no payload")),
    };
    key.verify_es256(&tbs, &sign1.signature)
}

/// Verify a COSE_Sign1 made for `domain`.
pub fn verify_sign1(
    sign1: &CoseSign1,
    key: &EcPublicKey,
    domain: Domain,
    detached: Option<&[u8]>,
) -> Result<()> {
    verify_sign1_with_aad(sign1, key, domain.external_aad(), detached)
}

/// Build and sign a COSE_Sign1 for `domain`. `alg` is set in the protected header; the caller adds
/// the rest (`kid`, `x5chain`, content type) through the two header builders.
pub fn sign1(
    signer: &dyn Signer,
    domain: Domain,
    protected: HeaderBuilder,
    unprotected: Header,
    payload: Option<Vec<u8>>,
    detached: Option<&[u8]>,
) -> Result<CoseSign1> {
    let protected = protected.algorithm(iana::Algorithm::ES256).build();
    let mut builder = CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected);
    if let Some(p) = payload {
        builder = builder.payload(p);
    }
    let mut unsigned = builder.build();
    let tbs = match detached {
        Some(d) => unsigned.tbs_detached_data(d, domain.external_aad()),
        None => unsigned.tbs_data(domain.external_aad()),
    };
    let sig = signer.sign(&tbs)?;
    if sig.len() != 64 {
        return Err(Error::Signer(format!(
            "ES256 signature of {} bytes",
            sig.len()
        )));
    }
    unsigned.signature = sig;
    Ok(unsigned)
}

/// The `kid` of a COSE_Sign1, from the **protected** header only: the key id decides which
/// key and accreditation apply, so it must be covered by the signature.
pub fn kid(sign1: &CoseSign1) -> Option<&[u8]> {
    let kid = &sign1.protected.header.key_id;
    (!kid.is_empty()).then_some(kid.as_slice())
}

/// The `x5chain` certificates (DER), leaf first, from either header.
pub fn x5chain(sign1: &CoseSign1) -> Result<Vec<Vec<u8>>> {
    let find = |h: &Header| {
        h.rest
            .iter()
            .find(|(label, _)| *label == coset::Label::Int(X5CHAIN))
            .map(|(_, v)| v.clone())
    };
    let Some(value) = find(&sign1.protected.header).or_else(|| find(&sign1.unprotected)) else {
        return Ok(Vec::new());
    };
    match value {
        Value::Bytes(b) => Ok(vec![b]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Bytes(b) => Ok(b),
                _ => Err(Error::malformed(
                    "x5chain",
                    "certificate is not a byte string",
                )),
            })
            .collect(),
        _ => Err(Error::malformed(
            "x5chain",
            "expected bstr or array of bstr",
        )),
    }
}

/// A COSE_Key (EC2, P-256) as a CBOR value: `{1: 2, -1: 1, -2: x, -3: y}`.
pub fn cose_key_value(key: &EcPublicKey) -> Value {
    Value::Map(vec![
        (Value::Integer(1.into()), Value::Integer(2.into())),
        (Value::Integer((-1).into()), Value::Integer(1.into())),
        (Value::Integer((-2).into()), Value::Bytes(key.x().to_vec())),
        (Value::Integer((-3).into()), Value::Bytes(key.y().to_vec())),
    ])
}

/// Parse an EC2 P-256 COSE_Key value into a public key.
pub fn cose_key_from_value(value: &Value) -> Result<EcPublicKey> {
    const WHAT: &str = "COSE_Key";
    let map = cbor::access::map(WHAT, value)?;
    let kty = cbor::access::get_int(WHAT, map, 1)?.and_then(Value::as_integer);
    if kty != Some(2.into()) {
        return Err(Error::Unsupported("COSE_Key kty other than EC2".into()));
    }
    let crv = cbor::access::get_int(WHAT, map, -1)?.and_then(Value::as_integer);
    if crv != Some(1.into()) {
        return Err(Error::Unsupported("COSE_Key curve other than P-256".into()));
    }
    let x = cbor::access::get_int(WHAT, map, -2)?
        .and_then(Value::as_bytes)
        .ok_or_else(|| Error::malformed(WHAT, "missing x"))?;
    match cbor::access::get_int(WHAT, map, -3)? {
        Some(Value::Bytes(y)) => EcPublicKey::from_coordinates(x, y),
        Some(Value::Bool(sign)) => {
            let mut sec1 = Vec::with_capacity(33);
            sec1.push(if *sign { 0x03 } else { 0x02 });
            sec1.extend_from_slice(x);
            EcPublicKey::from_sec1(&sec1)
        }
        _ => Err(Error::malformed(WHAT, "missing y")),
    }
}
