//! ReaderAuth: the reader's COSE_Sign1 over `ReaderAuthenticationBytes`. Interop readers carry a
//! certificate in `x5chain`, checked against a trusted reader root ([`verify`]); Civis kiosks
//! carry their governance-signed kiosk accreditation in the unprotected header
//! ([`crate::kiosk::READER_AUTH_LABEL`]), which the card checks ([`sign_with_accreditation`]).

use super::engagement::SessionTranscript;
use super::request::{DocRequest, ItemsRequest};
use super::signed::Sign1;
use crate::cbor::Tagged;
use crate::cose::{self, Domain};
use crate::error::{Error, Result};
use crate::timestamp::Timestamp;
use crate::x509::Cert;

/// Verify a DocRequest's readerAuth against `roots` at `at`; returns the reader's certificate.
pub fn verify(
    doc_request: &DocRequest,
    transcript: &SessionTranscript,
    roots: &[Cert],
    at: Timestamp,
) -> Result<Cert> {
    let auth = doc_request
        .reader_auth
        .as_ref()
        .ok_or_else(|| Error::invalid("ReaderAuth", "the request is not reader-authenticated"))?;
    if auth.cose.payload.is_some() {
        return Err(Error::malformed(
            "ReaderAuth",
            "payload must be detached (nil)",
        ));
    }
    cose::check_alg(&auth.cose)?;
    let chain = cose::x5chain(&auth.cose)?;
    let leaf = Cert::from_der(
        chain
            .first()
            .ok_or_else(|| Error::malformed("ReaderAuth", "no x5chain"))?,
    )?;
    let root = roots
        .iter()
        .find(|r| leaf.names_issuer(r))
        .ok_or_else(|| Error::Certificate("reader certificate names no trusted root".into()))?;
    leaf.verify_issued_by(root, at)?;
    let payload = transcript.reader_authentication_bytes(&doc_request.items_request);
    cose::verify_sign1(
        &auth.cose,
        leaf.public_key(),
        Domain::IsoReaderAuth,
        Some(&payload),
    )?;
    Ok(leaf)
}

/// Build a reader-authenticated DocRequest: ReaderAuth signed by the kiosk key over
/// `ReaderAuthenticationBytes`, carrying the kiosk accreditation `statement` in its unprotected
/// header.
pub fn sign_with_accreditation(
    items_request: ItemsRequest,
    transcript: &SessionTranscript,
    kiosk_key: &dyn cose::Signer,
    statement: &[u8],
) -> Result<DocRequest> {
    let items_request = Tagged::new(items_request);
    let mut unprotected = coset::Header::default();
    crate::kiosk::attach(&mut unprotected, statement)?;
    let payload = transcript.reader_authentication_bytes(&items_request);
    let sign1 = cose::sign1(
        kiosk_key,
        Domain::IsoReaderAuth,
        coset::HeaderBuilder::new(),
        unprotected,
        None,
        Some(&payload),
    )?;
    Ok(DocRequest {
        items_request,
        reader_auth: Some(Sign1::new(sign1)),
    })
}
