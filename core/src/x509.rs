//! The small part of X.509 an mdoc reader needs: a document-signer certificate in `x5chain`,
//! checked against a trusted IACA certificate at a given time.

use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};
use crate::timestamp::Timestamp;

/// Largest certificate accepted.
pub const MAX_CERT_LEN: usize = 16 * 1024;

const ECDSA_WITH_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// A parsed certificate with the fields Civis uses.
#[derive(Debug, Clone)]
pub struct Cert {
    cert: Certificate,
    der: Vec<u8>,
    key: EcPublicKey,
}

impl Cert {
    /// Parse DER; the subject key must be P-256.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        if der.len() > MAX_CERT_LEN {
            return Err(Error::TooLarge {
                what: "certificate",
                len: der.len(),
                limit: MAX_CERT_LEN,
            });
        }
        let cert =
            Certificate::from_der(der).map_err(|e| Error::Certificate(format!("bad DER: {e}")))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::Certificate("public key is not whole bytes".into()))?;
        let key = EcPublicKey::from_sec1(spki)?;
        Ok(Self {
            cert,
            der: der.to_vec(),
            key,
        })
    }

    /// The subject's P-256 public key.
    pub fn public_key(&self) -> &EcPublicKey {
        &self.key
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject name as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// notBefore and notAfter.
    pub fn validity(&self) -> (Timestamp, Timestamp) {
        let v = &self.cert.tbs_certificate.validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (Timestamp(secs(v.not_before)), Timestamp(secs(v.not_after)))
    }

    /// Whether this certificate names `issuer`'s subject as its issuer.
    pub fn names_issuer(&self, issuer: &Cert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    /// Check that `issuer` signed this certificate, names match, and both are valid at `at`.
    pub fn verify_issued_by(&self, issuer: &Cert, at: Timestamp) -> Result<()> {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(Error::Certificate(
                "issuer name does not match the trust anchor".into(),
            ));
        }
        if self.cert.signature_algorithm.oid != ECDSA_WITH_SHA256 {
            return Err(Error::Certificate(
                "signature algorithm is not ecdsa-with-SHA256".into(),
            ));
        }
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| Error::Certificate(format!("bad DER: {e}")))?;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| Error::Certificate("signature is not whole bytes".into()))?;
        issuer.key.verify_es256_der(&tbs, sig).map_err(|_| {
            Error::Certificate("signature by the trust anchor does not verify".into())
        })?;
        for (name, cert) in [("document signer", self), ("trust anchor", issuer)] {
            let (nb, na) = cert.validity();
            if at < nb {
                return Err(Error::Certificate(format!(
                    "{name} certificate not yet valid at {at}"
                )));
            }
            if at > na {
                return Err(Error::Certificate(format!(
                    "{name} certificate expired at {at}"
                )));
            }
        }
        Ok(())
    }
}
