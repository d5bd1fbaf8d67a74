//! JWK (RFC 7517) for P-256 keys: the key-file format of Civis.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};

/// A P-256 JWK; `d` is present only in private key files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type, always `EC`.
    pub kty: String,
    /// Curve, always `P-256`.
    pub crv: String,
    /// x coordinate, base64url.
    pub x: String,
    /// y coordinate, base64url.
    pub y: String,
    /// Private scalar, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// Key id (for issuer keys: the `did:civis` DID URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm, `ES256` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

fn b64(what: &'static str, s: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| Error::malformed(what, e.to_string()))
}

impl Jwk {
    /// Parse JSON text, checking `kty`/`crv`.
    pub fn from_json(text: &str) -> Result<Self> {
        let jwk: Jwk =
            serde_json::from_str(text).map_err(|e| Error::malformed("JWK", e.to_string()))?;
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(Error::Unsupported(format!(
                "JWK {}/{} (only EC/P-256)",
                jwk.kty, jwk.crv
            )));
        }
        if jwk.alg.as_deref().is_some_and(|a| a != "ES256") {
            return Err(Error::Unsupported("JWK alg other than ES256".into()));
        }
        Ok(jwk)
    }

    /// The public key.
    pub fn public_key(&self) -> Result<EcPublicKey> {
        EcPublicKey::from_coordinates(&b64("JWK x", &self.x)?, &b64("JWK y", &self.y)?)
    }

    /// The private key, when `d` is present; it must match `x`/`y`.
    pub fn private_key(&self) -> Result<Option<SoftwareKey>> {
        let Some(d) = &self.d else { return Ok(None) };
        let key = SoftwareKey::from_scalar(&b64("JWK d", d)?)?;
        if key.public_key() != &self.public_key()? {
            return Err(Error::InvalidKey("JWK d does not match x/y".into()));
        }
        Ok(Some(key))
    }

    /// A public JWK for `key`.
    pub fn from_public(key: &EcPublicKey, kid: Option<String>) -> Self {
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: URL_SAFE_NO_PAD.encode(key.x()),
            y: URL_SAFE_NO_PAD.encode(key.y()),
            d: None,
            kid,
            alg: Some("ES256".into()),
        }
    }

    /// A private JWK for `key`.
    pub fn from_private(key: &SoftwareKey, kid: Option<String>) -> Self {
        let mut jwk = Self::from_public(key.public_key(), kid);
        jwk.d = Some(URL_SAFE_NO_PAD.encode(&*key.scalar()));
        jwk
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
