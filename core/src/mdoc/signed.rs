//! COSE_Sign1 and COSE_Mac0 as they appear inside mdoc structures: parsed with `coset`, but the
//! decoded value is kept so that re-encoding reproduces the input byte for byte.

use ciborium::Value;
use coset::{AsCborValue, CoseMac0, CoseSign1};

use crate::cose;
use crate::error::{Error, Result};

/// An embedded (untagged) COSE_Sign1.
#[derive(Debug, Clone, PartialEq)]
pub struct Sign1 {
    raw: Value,
    /// The parsed structure.
    pub cose: CoseSign1,
}

impl Sign1 {
    /// Parse from a decoded value.
    pub fn from_value(v: &Value) -> Result<Self> {
        Ok(Self {
            cose: cose::sign1_from_value(v.clone())?,
            raw: v.clone(),
        })
    }

    /// Wrap a freshly built COSE_Sign1.
    pub fn new(cose: CoseSign1) -> Self {
        Self {
            raw: cose::sign1_to_value(&cose),
            cose,
        }
    }

    /// The value as decoded (or as built).
    pub fn to_value(&self) -> Value {
        self.raw.clone()
    }
}

/// An embedded (untagged) COSE_Mac0.
#[derive(Debug, Clone, PartialEq)]
pub struct Mac0 {
    raw: Value,
    /// The parsed structure.
    pub cose: CoseMac0,
}

impl Mac0 {
    /// Parse from a decoded value (tag 17 or untagged).
    pub fn from_value(v: &Value) -> Result<Self> {
        let inner = match v {
            Value::Tag(17, inner) => (**inner).clone(),
            Value::Tag(t, _) => {
                return Err(Error::malformed("COSE_Mac0", format!("unexpected tag {t}")));
            }
            other => other.clone(),
        };
        Ok(Self {
            cose: CoseMac0::from_cbor_value(inner)
                .map_err(|e| Error::malformed("COSE_Mac0", e.to_string()))?,
            raw: v.clone(),
        })
    }

    /// Wrap a freshly built COSE_Mac0.
    pub fn new(cose: CoseMac0) -> Self {
        Self {
            raw: cose.clone().to_cbor_value().unwrap_or(Value::Null),
            cose,
        }
    }

    /// The value as decoded (or as built).
    pub fn to_value(&self) -> Value {
        self.raw.clone()
    }
}
