//! The HTTP client of the issuer API, used by `civis issuer …` (a counter's CLI) and the tests.

use std::time::Duration;

use civis_core::issuer_api::{
    AuditPage, BulkStatusAnswer, CredentialAnswer, CredentialStatus, EnrollAnswer, EnrollRequest,
    ErrorBody, IssuerHealth, KeyedRequest, MintRequest, PersonalizeRequest, PersonalizeStep,
    RenewReceipt, RenewRequest, RenewStep, StatusRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Largest answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// A client bound to one service and one operator token.
#[derive(Debug, Clone)]
pub struct IssuerClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl IssuerClient {
    /// A client for `base` (`http://host:port`) acting with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    async fn read<T: DeserializeOwned>(mut resp: reqwest::Response) -> Result<T> {
        let status = resp.status().as_u16();
        let too_large = || Error::Unreachable("answer too large".into());
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        // Read chunk by chunk under the cap: a body without a length is cut, not buffered.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Unreachable(format!("malformed answer: {e}")))
        } else {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                code: "http".into(),
                message: format!("HTTP {status}"),
            });
            Err(Error::Remote {
                status,
                code: body.code,
                message: body.message,
            })
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Self::read(resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Self::read(resp).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(());
        }
        Self::read::<serde_json::Value>(resp).await.map(drop)
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<IssuerHealth> {
        self.get("/health").await
    }

    /// `POST /v1/residents`.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollAnswer> {
        self.post("/v1/residents", req).await
    }

    /// `POST /v1/credentials`.
    pub async fn mint(&self, req: &MintRequest) -> Result<CredentialAnswer> {
        self.post("/v1/credentials", req).await
    }

    /// `GET /v1/credentials/{id}`.
    pub async fn credential(&self, id: &str) -> Result<CredentialAnswer> {
        self.get(&format!("/v1/credentials/{id}")).await
    }

    /// `POST /v1/personalizations`.
    pub async fn personalize(&self, req: &PersonalizeRequest) -> Result<PersonalizeStep> {
        self.post("/v1/personalizations", req).await
    }

    /// `POST /v1/renewals`.
    pub async fn renew(&self, req: &RenewRequest) -> Result<RenewStep> {
        self.post("/v1/renewals", req).await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v1/tokens/{id}")).await
    }

    /// `GET /v1/credentials/{id}/status`.
    pub async fn status(&self, id: &str) -> Result<CredentialStatus> {
        self.get(&format!("/v1/credentials/{id}/status")).await
    }

    /// `POST /v1/credentials/{id}/status`.
    pub async fn change_status(&self, id: &str, req: &StatusRequest) -> Result<CredentialStatus> {
        self.post(&format!("/v1/credentials/{id}/status"), req)
            .await
    }

    /// `POST /v1/batches/{id}/suspend`.
    pub async fn suspend_batch(&self, batch: &str, request_key: &str) -> Result<BulkStatusAnswer> {
        let body = KeyedRequest {
            request_key: request_key.to_owned(),
        };
        self.post(&format!("/v1/batches/{batch}/suspend"), &body)
            .await
    }

    /// `POST /v1/cards/{serial}/lost`.
    pub async fn card_lost(&self, serial: &str, request_key: &str) -> Result<BulkStatusAnswer> {
        let body = KeyedRequest {
            request_key: request_key.to_owned(),
        };
        self.post(&format!("/v1/cards/{serial}/lost"), &body).await
    }

    /// `POST /v1/keys/rotate`: the new key URL, once the rotation is final.
    pub async fn rotate_key(&self) -> Result<String> {
        let v: serde_json::Value = self.post("/v1/keys/rotate", &serde_json::json!({})).await?;
        v.get("kid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::Unreachable("malformed answer".into()))
    }

    /// `GET /v1/audit`.
    pub async fn audit(&self, after: u64, limit: u32) -> Result<AuditPage> {
        self.get(&format!("/v1/audit?after={after}&limit={limit}"))
            .await
    }
}

/// Rounds of read-facts → ask → play commands before the relay gives up (a whole
/// personalization takes five).
const MAX_ROUNDS: usize = 12;

/// What the counter enters for one personalization.
#[derive(Debug, Clone)]
pub struct Counter<'a> {
    /// Idempotency key: the same key resumes an interrupted personalization.
    pub request_key: &'a str,
    /// Resident id.
    pub resident: &'a str,
    /// Card batch.
    pub batch: &'a str,
    /// The resident's PIN.
    pub pin: &'a str,
    /// The PUK.
    pub puk: &'a str,
}

impl IssuerClient {
    /// Personalize the card in `card` by relaying between it and the service until the card is
    /// locked and its credential recorded as issued. Safe to run again with the same request
    /// key after any interruption. `progress` sees every step.
    pub async fn relay<T: civis_firmware_bridge::transport::CardTransport>(
        &self,
        card: &mut civis_firmware_bridge::reader::CardClient<T>,
        counter: &Counter<'_>,
        progress: &mut dyn FnMut(&PersonalizeStep),
    ) -> Result<PersonalizeStep> {
        use civis_core::apdu::{Response, StatusWord};
        let card_err = |e: civis_firmware_bridge::Error| Error::Card(e.to_string());
        // The PIN and PUK go to the service only when it asks for them.
        let mut secrets = false;
        for _ in 0..MAX_ROUNDS {
            // Sealed once the card is locked: the counter relays it, the service opens it.
            let info = card.get_data().map_err(card_err)?;
            let req = PersonalizeRequest {
                request_key: counter.request_key.to_owned(),
                resident: counter.resident.to_owned(),
                batch: counter.batch.to_owned(),
                card: (&info).into(),
                pin: secrets.then(|| counter.pin.to_owned()),
                puk: secrets.then(|| counter.puk.to_owned()),
            };
            let step = self.personalize(&req).await?;
            progress(&step);
            if step.done {
                return Ok(step);
            }
            secrets = !step.needs.is_empty();
            if secrets {
                continue;
            }
            if step.commands.is_empty() {
                return Err(Error::CardRefused("the service sent nothing to do"));
            }
            for hex_cmd in &step.commands {
                let cmd = hex::decode(hex_cmd)
                    .map_err(|_| Error::Unreachable("malformed command from the service".into()))?;
                let answer = card.transport().transmit(&cmd).map_err(card_err)?;
                let r = Response::parse(&answer).map_err(Error::Core)?;
                if r.sw != StatusWord::Ok {
                    // Read the facts again and let the service decide.
                    break;
                }
            }
        }
        Err(Error::CardRefused(
            "personalization did not finish; run it again with the same request key",
        ))
    }

    /// Renew the credential on the locked card in `card` by relaying between it and the
    /// service: the service seals the new credential to the card, the card stores it and signs
    /// a receipt, the relay hands the receipt back. Safe to run again with the same request key
    /// after any interruption (the card keeps its old credential until the new one is whole).
    pub async fn relay_renewal<T: civis_firmware_bridge::transport::CardTransport>(
        &self,
        card: &mut civis_firmware_bridge::reader::CardClient<T>,
        request_key: &str,
        progress: &mut dyn FnMut(&RenewStep),
    ) -> Result<RenewStep> {
        use civis_core::apdu::{Response, StatusWord};
        let card_err = |e: civis_firmware_bridge::Error| Error::Card(e.to_string());
        let mut receipt = None;
        for _ in 0..MAX_ROUNDS {
            let info = card.get_data().map_err(card_err)?;
            let req = RenewRequest {
                request_key: request_key.to_owned(),
                card: (&info).into(),
                receipt: receipt.take(),
            };
            let step = self.renew(&req).await?;
            progress(&step);
            if step.done {
                return Ok(step);
            }
            let (Some(counter), false) = (step.counter, step.commands.is_empty()) else {
                return Err(Error::CardRefused("the service sent nothing to do"));
            };
            let mut answer = None;
            for hex_cmd in &step.commands {
                let cmd = hex::decode(hex_cmd)
                    .map_err(|_| Error::Unreachable("malformed command from the service".into()))?;
                let raw = card.transport().transmit(&cmd).map_err(card_err)?;
                let r = Response::parse(&raw).map_err(Error::Core)?;
                if r.sw != StatusWord::Ok {
                    answer = None;
                    break;
                }
                answer = Some(r.data);
            }
            receipt = answer
                .filter(|d| !d.is_empty())
                .map(|signature| RenewReceipt { counter, signature });
        }
        Err(Error::CardRefused(
            "renewal did not finish; run it again with the same request key",
        ))
    }
}
