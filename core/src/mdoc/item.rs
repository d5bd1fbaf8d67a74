//! `IssuerSignedItem`: one data element with its salt and digest id.

use ciborium::Value;

use crate::cbor::{CborForm, access, text_map};
use crate::error::{Error, Result};

/// Minimum salt length (18013-5 §9.1.2.5 requires at least 16 random bytes).
pub const MIN_SALT_LEN: usize = 16;

/// `IssuerSignedItem = {"digestID": uint, "random": bstr, "elementIdentifier": tstr, "elementValue": any}`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerSignedItem {
    /// Index of this item's digest in the MSO.
    pub digest_id: u64,
    /// Random salt that makes the digest unguessable.
    pub random: Vec<u8>,
    /// Element identifier, e.g. `family_name`.
    pub element_identifier: String,
    /// Element value.
    pub element_value: Value,
}

impl CborForm for IssuerSignedItem {
    const WHAT: &'static str = "IssuerSignedItem";
    const MAX_LEN: usize = 64 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        let m = access::map(Self::WHAT, v)?;
        access::only_keys(
            Self::WHAT,
            m,
            &["digestID", "random", "elementIdentifier", "elementValue"],
        )?;
        let random = access::bytes(Self::WHAT, access::req(Self::WHAT, m, "random")?)?.to_vec();
        if random.len() < MIN_SALT_LEN {
            return Err(Error::invalid(
                Self::WHAT,
                "random salt shorter than 16 bytes",
            ));
        }
        Ok(Self {
            digest_id: access::uint(Self::WHAT, access::req(Self::WHAT, m, "digestID")?)?,
            random,
            element_identifier: access::text(
                Self::WHAT,
                access::req(Self::WHAT, m, "elementIdentifier")?,
            )?
            .to_owned(),
            element_value: access::req(Self::WHAT, m, "elementValue")?.clone(),
        })
    }

    fn to_value(&self) -> Value {
        text_map(vec![
            ("digestID", Value::Integer(self.digest_id.into())),
            ("random", Value::Bytes(self.random.clone())),
            (
                "elementIdentifier",
                Value::Text(self.element_identifier.clone()),
            ),
            ("elementValue", self.element_value.clone()),
        ])
    }
}
