//! QR presentations for phone wallets: the kiosk shows a **kiosk engagement** (a fresh nonce, its
//! ephemeral key and what it asks for); the wallet answers with a **QR presentation** — its
//! DeviceResponse, device-signed over a SessionTranscript that binds the nonce and the kiosk's
//! key, compressed and encrypted with the ISO 18013-5 session keys of the two ephemeral keys.
//!
//! Both travel as text in the QR alphanumeric alphabet: a prefix and the base45 (RFC 9285)
//! encoding of the CBOR. Specified in specs/qr-presentation.md.

use std::io::Read as _;

use ciborium::Value;

use crate::cbor::{self, Limits, access, text, text_map};
use crate::cose;
use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};
use crate::mdoc::engagement::SessionTranscript;
use crate::mdoc::request::ItemsRequest;
use crate::mdoc::response::MAX_DEVICE_RESPONSE_LEN;
use crate::session::{Role, Session};

/// Text prefix of a kiosk engagement.
pub const ENGAGEMENT_PREFIX: &str = "CVE1:";
/// Text prefix of a QR presentation.
pub const PRESENTATION_PREFIX: &str = "CVP1:";
/// The Handover tag in the SessionTranscript of a QR presentation.
pub const HANDOVER_TAG: &str = "org.civis.qr.1";
/// Largest kiosk engagement accepted (CBOR bytes).
pub const MAX_ENGAGEMENT_LEN: usize = 2048;
/// Largest QR presentation accepted (CBOR bytes): what a version-40 QR code holds in
/// alphanumeric mode (4,296 characters) as base45.
pub const MAX_PRESENTATION_LEN: usize = 2_864;
/// Nonce length.
pub const NONCE_LEN: usize = 16;

/// What a kiosk shows: who to encrypt for, the session nonce, and its request.
#[derive(Debug, Clone, PartialEq)]
pub struct KioskEngagement {
    /// Fresh per engagement; binds the answer to this screen.
    pub nonce: [u8; NONCE_LEN],
    /// The kiosk's ephemeral key, as the COSE_Key bytes that go into the transcript.
    pub e_reader_key_bytes: Vec<u8>,
    /// The same key, decoded.
    pub e_reader_key: EcPublicKey,
    /// What it asks for.
    pub request: ItemsRequest,
}

const WE: &str = "kiosk engagement";
const WP: &str = "QR presentation";

fn to_text(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", base45::encode(bytes))
}

fn from_text(what: &'static str, prefix: &str, text: &str, limit: usize) -> Result<Vec<u8>> {
    let body = text
        .strip_prefix(prefix)
        .ok_or_else(|| Error::malformed(what, format!("does not start with {prefix}")))?;
    // base45 turns 2 bytes into 3 characters; refuse before decoding anything too long.
    if body.len() > limit.saturating_mul(3).div_ceil(2) {
        return Err(Error::TooLarge {
            what,
            len: body.len(),
            limit: limit.saturating_mul(3).div_ceil(2),
        });
    }
    base45::decode(body).map_err(|_| Error::malformed(what, "not base45"))
}

impl KioskEngagement {
    /// A new engagement for `request` with a fresh key and nonce; returns it with the kiosk's
    /// ephemeral private key (keep it to open the answer).
    pub fn new(
        request: ItemsRequest,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> (Self, SoftwareKey) {
        let key = SoftwareKey::generate(rng);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let e_reader_key_bytes = cbor::encode(&cose::cose_key_value(key.public_key()));
        (
            Self {
                nonce,
                e_reader_key: key.public_key().clone(),
                e_reader_key_bytes,
                request,
            },
            key,
        )
    }

    /// The SessionTranscript both sides use: `[null, #6.24(EReaderKey), ["org.civis.qr.1",
    /// nonce]]`.
    pub fn transcript(&self) -> SessionTranscript {
        SessionTranscript::new(
            None,
            Some(&self.e_reader_key_bytes),
            Value::Array(vec![text(HANDOVER_TAG), Value::Bytes(self.nonce.to_vec())]),
        )
    }

    /// CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("v", Value::Integer(1.into())),
            ("nonce", Value::Bytes(self.nonce.to_vec())),
            ("eReaderKey", Value::Bytes(self.e_reader_key_bytes.clone())),
            ("request", crate::cbor::CborForm::to_value(&self.request)),
        ]))
    }

    /// Decode, within [`MAX_ENGAGEMENT_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let v = cbor::decode(WE, bytes, Limits::new(MAX_ENGAGEMENT_LEN))?;
        let m = access::map(WE, &v)?;
        access::only_keys(WE, m, &["v", "nonce", "eReaderKey", "request"])?;
        if access::uint(WE, access::req(WE, m, "v")?)? != 1 {
            return Err(Error::Unsupported("kiosk engagement version".into()));
        }
        let nonce = access::bytes(WE, access::req(WE, m, "nonce")?)?
            .try_into()
            .map_err(|_| Error::malformed(WE, "nonce is not 16 bytes"))?;
        let key_bytes = access::bytes(WE, access::req(WE, m, "eReaderKey")?)?;
        let key_value = cbor::decode(WE, key_bytes, Limits::new(512))?;
        Ok(Self {
            nonce,
            e_reader_key: cose::cose_key_from_value(&key_value)?,
            e_reader_key_bytes: key_bytes.to_vec(),
            request: <ItemsRequest as crate::cbor::CborForm>::from_value(access::req(
                WE, m, "request",
            )?)?,
        })
    }

    /// The QR text: `CVE1:` and base45.
    pub fn to_text(&self) -> String {
        to_text(ENGAGEMENT_PREFIX, &self.encode())
    }

    /// Parse the QR text.
    pub fn from_text(s: &str) -> Result<Self> {
        Self::decode(&from_text(WE, ENGAGEMENT_PREFIX, s, MAX_ENGAGEMENT_LEN)?)
    }
}

/// What a phone wallet shows back: its ephemeral key and the encrypted, compressed
/// DeviceResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrPresentation {
    /// The wallet's ephemeral key (COSE_Key bytes).
    pub e_device_key_bytes: Vec<u8>,
    /// AES-256-GCM under SKDevice (device IV, counter 1) of the raw-deflated DeviceResponse.
    pub data: Vec<u8>,
}

impl QrPresentation {
    /// Seal `device_response` (built and device-signed over `engagement.transcript()`) for the
    /// kiosk of `engagement`.
    pub fn seal(
        engagement: &KioskEngagement,
        device_response: &[u8],
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<Self> {
        let e_device = SoftwareKey::generate(rng);
        let mut session = Session::new(
            Role::Device,
            &e_device,
            &engagement.e_reader_key,
            &engagement.transcript().tagged_bytes(),
        );
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, device_response)
            .map_err(|_| Error::invalid(WP, "compression failed"))?;
        let compressed = z
            .finish()
            .map_err(|_| Error::invalid(WP, "compression failed"))?;
        let p = Self {
            e_device_key_bytes: cbor::encode(&cose::cose_key_value(e_device.public_key())),
            data: session.encrypt(&compressed)?,
        };
        let len = p.encode().len();
        if len > MAX_PRESENTATION_LEN {
            return Err(Error::TooLarge {
                what: WP,
                len,
                limit: MAX_PRESENTATION_LEN,
            });
        }
        Ok(p)
    }

    /// Kiosk side: decrypt and inflate with the engagement's private key; returns the
    /// DeviceResponse bytes (verify them against `engagement.transcript()`).
    pub fn open(&self, engagement: &KioskEngagement, e_reader: &SoftwareKey) -> Result<Vec<u8>> {
        let key_value = cbor::decode(WP, &self.e_device_key_bytes, Limits::new(512))?;
        let e_device = cose::cose_key_from_value(&key_value)?;
        let mut session = Session::new(
            Role::Reader,
            e_reader,
            &e_device,
            &engagement.transcript().tagged_bytes(),
        );
        let compressed = session.decrypt(&self.data)?;
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(compressed.as_slice())
            .take(MAX_DEVICE_RESPONSE_LEN as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| Error::malformed(WP, "not deflate data"))?;
        if out.len() > MAX_DEVICE_RESPONSE_LEN {
            return Err(Error::TooLarge {
                what: WP,
                len: out.len(),
                limit: MAX_DEVICE_RESPONSE_LEN,
            });
        }
        Ok(out)
    }

    /// CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("v", Value::Integer(1.into())),
            ("eDeviceKey", Value::Bytes(self.e_device_key_bytes.clone())),
            ("data", Value::Bytes(self.data.clone())),
        ]))
    }

    /// Decode, within [`MAX_PRESENTATION_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let v = cbor::decode(WP, bytes, Limits::new(MAX_PRESENTATION_LEN))?;
        let m = access::map(WP, &v)?;
        access::only_keys(WP, m, &["v", "eDeviceKey", "data"])?;
        if access::uint(WP, access::req(WP, m, "v")?)? != 1 {
            return Err(Error::Unsupported("QR presentation version".into()));
        }
        Ok(Self {
            e_device_key_bytes: access::bytes(WP, access::req(WP, m, "eDeviceKey")?)?.to_vec(),
            data: access::bytes(WP, access::req(WP, m, "data")?)?.to_vec(),
        })
    }

    /// The QR text: `CVP1:` and base45.
    pub fn to_text(&self) -> String {
        to_text(PRESENTATION_PREFIX, &self.encode())
    }

    /// Parse the QR text.
    pub fn from_text(s: &str) -> Result<Self> {
        Self::decode(&from_text(
            WP,
            PRESENTATION_PREFIX,
            s,
            MAX_PRESENTATION_LEN,
        )?)
    }
}
