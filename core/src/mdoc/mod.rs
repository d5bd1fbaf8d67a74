//! ISO/IEC 18013-5 mdoc structures, issuance and verification.
//!
//! Decoding keeps the exact bytes of every tag-24 item and COSE structure, so that digests and
//! signatures are checked over what was sent and structures re-encode byte for byte.

pub mod citizen;
pub mod engagement;
pub mod issue;
pub mod item;
pub mod json;
pub mod mso;
pub mod reader_auth;
pub mod request;
pub mod response;
pub mod signed;
pub mod verify;

pub use engagement::{DeviceEngagement, SessionData, SessionEstablishment, SessionTranscript};
pub use issue::{IssueParams, IssuerKeyId, issue, mac_device, select, sign_device};
pub use item::IssuerSignedItem;
pub use mso::{DigestAlgorithm, MobileSecurityObject, StatusRef, TDate, ValidityInfo};
pub use request::{DeviceRequest, DocRequest, ItemsRequest};
pub use response::{
    DeviceAuth, DeviceNameSpaces, DeviceResponse, DeviceSigned, Document, IssuerSigned, NameSpaced,
};
pub use verify::{IssuerId, TrustAnchor, VerifiedDocument, VerifyContext, verify, verify_bytes};
