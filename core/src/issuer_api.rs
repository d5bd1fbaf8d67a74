//! The issuer service's HTTP bodies (`specs/issuer-api.md`), shared by the service and its CLI.
//!
//! Every request that creates or changes something carries a caller-chosen `requestKey`: the
//! same key again (a retry, or a concurrent duplicate) gets the first request's result and never
//! a second credential, a second status change or a second enrollment.
//!
//! Binary fields travel as lowercase hex, credentials as base64url (no padding).

use serde::{Deserialize, Serialize};

use crate::api::hex_bytes;

/// What an operator token may do.
pub const SCOPES: &[&str] = &["enroll", "personalize", "status", "audit", "admin"];

/// Longest request key.
pub const MAX_REQUEST_KEY_LEN: usize = 64;

/// Every error answer: a stable machine-readable `code` and a message for people. Neither ever
/// holds personal data or internal details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code (`unauthorized`, `forbidden`, `not_found`, `invalid_body`, …).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// `POST /v1/residents`: enroll a resident of the token's agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollRequest {
    /// Idempotency key.
    pub request_key: String,
    /// Family name (1–64 characters, letters, spaces, `-`, `'`, `.`).
    pub family_name: String,
    /// Given name (same rule).
    pub given_name: String,
    /// `YYYY-MM-DD`, not in the future, not before 1900.
    pub birth_date: String,
    /// One of the agency's districts (its config).
    pub resident_district: String,
    /// The agency's document number (1–32 of `A–Z 0–9 -`).
    pub document_number: String,
}

/// The answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollAnswer {
    /// The resident's id at this issuer (random, no personal data).
    pub resident: String,
    /// False when the request key had already enrolled this resident.
    pub created: bool,
}

/// `POST /v1/credentials`: mint a credential for a device key without a card (phone wallets,
/// the benchmark). Cards are personalized with [`PersonalizeRequest`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MintRequest {
    /// Idempotency key.
    pub request_key: String,
    /// The resident's id.
    pub resident: String,
    /// The holder's device key, SEC1 (hex).
    #[serde(with = "hex_bytes")]
    pub device_key: Vec<u8>,
}

/// A credential as the issuer records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialAnswer {
    /// The credential's id at this issuer.
    pub credential: String,
    /// The resident's id.
    pub resident: String,
    /// The status list's URI on the chain.
    pub status_list: String,
    /// Its index in that list.
    pub status_index: u64,
    /// `minted` (signed and recorded) or `issued` (on a locked card, or handed to a wallet).
    pub state: String,
    /// The IssuerSigned bytes (base64url), for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_signed: Option<String>,
}

/// The card's public facts as a reader reads them (GET DATA), relayed to the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CardFacts {
    /// Card serial (16 bytes, hex).
    #[serde(with = "hex_bytes")]
    pub serial: Vec<u8>,
    /// Personalization has ended.
    pub locked: bool,
    /// The counter the next personalization MAC must use.
    pub perso_counter: u32,
    /// The card key's public key (SEC1, hex), once generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The card's VRF key for election pseudonyms (SEC1 compressed, hex), once generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf_key: Option<String>,
    /// A PIN is set.
    pub pin_set: bool,
    /// A PUK is set.
    pub puk_set: bool,
    /// The governance set is installed.
    pub has_root: bool,
    /// Occupied credential slots.
    pub credentials: Vec<u8>,
    /// A locked card's facts as it gives them: sealed to its batch's transport key (hex,
    /// card-applet.md §4.3). The other fields are then placeholders; the issuer opens this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl CardFacts {
    /// The facts themselves: these, or the sealed ones opened with whichever of `keys` is the
    /// card's batch key.
    pub fn unseal<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a crate::card::TransportKey>,
    ) -> crate::Result<Self> {
        let Some(sealed) = &self.sealed else {
            return Ok(self.clone());
        };
        let bytes =
            hex::decode(sealed).map_err(|_| crate::Error::malformed("card.sealed", "not hex"))?;
        keys.into_iter()
            .find_map(|k| crate::card::sealed_info::open(k, &bytes).ok())
            .map(|info| Self::from(&info))
            .ok_or(crate::Error::Decrypt)
    }
}

impl From<&crate::card::GetData> for CardFacts {
    fn from(answer: &crate::card::GetData) -> Self {
        match answer {
            crate::card::GetData::Open(info) => info.into(),
            crate::card::GetData::Sealed(s) => Self {
                serial: Vec::new(),
                locked: true,
                perso_counter: 0,
                public_key: None,
                vrf_key: None,
                pin_set: false,
                puk_set: false,
                has_root: false,
                credentials: Vec::new(),
                sealed: Some(hex::encode(s)),
            },
        }
    }
}

impl From<&crate::card::CardInfo> for CardFacts {
    fn from(info: &crate::card::CardInfo) -> Self {
        Self {
            serial: info.serial.to_vec(),
            locked: info.locked,
            perso_counter: info.perso_counter,
            public_key: info.public_key.as_ref().map(hex::encode),
            vrf_key: info.vrf_key.as_ref().map(hex::encode),
            pin_set: info.pin_tries.is_some(),
            puk_set: info.puk_tries.is_some(),
            has_root: info.has_root,
            credentials: info.credentials.clone(),
            sealed: None,
        }
    }
}

/// `POST /v1/personalizations`: start or continue personalizing one card. The counter sends the
/// card's current facts each time; the issuer answers with the next commands (MAC'd under the
/// batch transport key) until the card is locked and the credential recorded as issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersonalizeRequest {
    /// Idempotency key: one personalization, one credential.
    pub request_key: String,
    /// The resident's id.
    pub resident: String,
    /// The card batch (names its transport key in the agency's config).
    pub batch: String,
    /// What the card says now.
    pub card: CardFacts,
    /// The resident's chosen PIN (4–12 digits), needed once the credential is minted. Never
    /// stored or logged by the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// The PUK (8–16 digits), with the PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puk: Option<String>,
}

/// The issuer's next step for a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonalizeStep {
    /// The personalization's id.
    pub personalization: String,
    /// Its recorded state (`started`, `key_checked`, `index_allocated`, `minted`, `written`,
    /// `issued`).
    pub state: String,
    /// Command APDUs (hex) to send in order, stopping at the first that does not answer 9000;
    /// then read the card's facts and ask again.
    pub commands: Vec<String>,
    /// What the issuer needs in the next request before it can go on (`pin`, `puk`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// The credential, once minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The card is locked and its credential recorded as issued.
    pub done: bool,
}

/// `POST /v1/renewals`: renew the credential on a locked card before it expires. Like a
/// personalization, the counter relays: it sends the card's facts, plays the commands it gets
/// back, and sends the card's receipt; the issuer records the new credential as issued and
/// revokes the one it replaces only once the receipt shows the card holds the new one whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RenewRequest {
    /// Idempotency key: one renewal, one new credential.
    pub request_key: String,
    /// What the card says now.
    pub card: CardFacts,
    /// The card's answer to RENEW CREDENTIAL, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<RenewReceipt>,
}

/// The card's receipt for a renewal: its signature over the counter the command used and the
/// new credential (specs/card-applet.md §7.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RenewReceipt {
    /// The personalization counter the RENEW CREDENTIAL command was sealed for.
    pub counter: u32,
    /// The card's ES256 signature (`r ‖ s`, 64 bytes, hex).
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// The issuer's next step for a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewStep {
    /// The renewal's id.
    pub renewal: String,
    /// Its recorded state (`started`, `index_allocated`, `minted`, `issued`).
    pub state: String,
    /// Command APDUs (hex) to send in order; the last one's answer data is the receipt.
    pub commands: Vec<String>,
    /// The personalization counter the commands are sealed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
    /// The credential being replaced.
    pub replaces: String,
    /// The new credential, once minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The card holds the new credential and it is recorded as issued.
    pub done: bool,
}

/// `POST /v1/credentials/{id}/status`: change a credential's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusRequest {
    /// Idempotency key.
    pub request_key: String,
    /// `suspend`, `unsuspend` or `revoke` (final).
    pub action: String,
}

/// `POST /v1/batches/{id}/suspend` and `POST /v1/cards/{serial}/lost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyedRequest {
    /// Idempotency key.
    pub request_key: String,
}

/// One status change on its way to the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChangeAnswer {
    /// The change's id.
    pub change: u64,
    /// The value it sets: `valid`, `suspended` or `revoked`.
    pub value: String,
    /// `pending` (recorded, not yet final on chain) or `anchored`.
    pub state: String,
    /// The block that anchored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
}

/// `GET /v1/credentials/{id}/status`: what the issuer wants and what the chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// The credential's id.
    pub credential: String,
    /// The status the issuer has decided (`valid`, `suspended`, `revoked`).
    pub wanted: String,
    /// The newest anchored status and its block, if any change was anchored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchored: Option<StatusChangeAnswer>,
    /// Changes not yet anchored, oldest first.
    pub pending: Vec<StatusChangeAnswer>,
}

/// The answer to a batch suspension or a lost card: the changes it recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkStatusAnswer {
    /// Credentials whose status changes.
    pub credentials: u64,
    /// False when the request key had already done this.
    pub created: bool,
}

/// One audit entry: who did what to which object, when, under which request key. Never an
/// attribute value, a PIN, a key or a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Sequence number (increasing).
    pub id: u64,
    /// Unix seconds.
    pub at: i64,
    /// The token id that acted.
    pub actor: String,
    /// `enroll`, `personalize`, `issue`, `mint`, `status`, `batch-suspend`, `card-lost`, …
    pub action: String,
    /// The object's id.
    pub object: String,
    /// The request key.
    pub request_key: String,
}

/// `GET /v1/audit`: entries after a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuerHealth {
    /// `ok`.
    pub status: String,
    /// Status changes recorded and not yet anchored.
    pub pending_changes: u64,
    /// Agencies whose DID and status list are not yet seen on chain (awaiting governance's
    /// accreditation, or the registry).
    #[serde(default)]
    pub unregistered: Vec<String>,
    /// Agencies whose last anchoring round failed (registry unreachable, or a transaction
    /// refused): their pending changes wait until the cause is fixed.
    #[serde(default)]
    pub anchoring_failing: Vec<String>,
}

/// Whether a request key is acceptable: 1–64 of `A–Z a–z 0–9 - _ . :`.
pub fn valid_request_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_REQUEST_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_are_bounded_and_plain() {
        assert!(valid_request_key("counter-3:2026-12-05.1"));
        assert!(!valid_request_key(""));
        assert!(!valid_request_key(&"a".repeat(65)));
        assert!(!valid_request_key("a\nb"));
        assert!(!valid_request_key("ä"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let body = r#"{"requestKey":"k","action":"revoke","extra":1}"#;
        assert!(serde_json::from_str::<StatusRequest>(body).is_err());
    }
}
