//! A client of the node's HTTP API, and the kiosk-side sync that keeps a snapshot file.

use std::path::Path;
use std::time::Duration;

use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use civis_core::chain::state::Genesis;
use serde_json::Value;

use crate::error::Error;
use crate::files::write_atomic;

/// A node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// `v[key]`, or null.
pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

async fn json_or_error(resp: reqwest::Response) -> Result<Value, Error> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| Error::Malformed(format!("node answered with non-JSON: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = field(&body, "message")
        .as_str()
        .unwrap_or("no message")
        .to_owned();
    Err(match field(&body, "error").as_str() {
        Some("not_found") => Error::NotFound(message),
        Some("conflict") => Error::Conflict(message),
        Some("busy") => Error::Busy(message),
        Some("malformed" | "too_large") => Error::Malformed(message),
        Some("refused") => Error::Rejected(message),
        _ => Error::Consensus(format!("node error {status}: {message}")),
    })
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7200`).
    pub fn new(base: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, Error> {
        self.http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| Error::Io(std::io::Error::other(format!("{}: {e}", self.base))))
    }

    /// `POST /v1/transactions`; returns the transaction id.
    pub async fn submit(&self, tx: Vec<u8>) -> Result<String, Error> {
        let resp = self
            .http
            .post(self.url("/v1/transactions"))
            .header("content-type", "application/cose")
            .body(tx)
            .send()
            .await
            .map_err(|e| Error::Io(std::io::Error::other(format!("{}: {e}", self.base))))?;
        let v = json_or_error(resp).await?;
        field(&v, "id")
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Malformed("no id in the answer".into()))
    }

    /// `GET /v1/transactions/{id}`.
    pub async fn transaction(&self, id: &str) -> Result<Value, Error> {
        json_or_error(self.get(&format!("/v1/transactions/{id}")).await?).await
    }

    /// Poll until transaction `id` is included or refused, up to `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.transaction(id).await?;
            if field(&v, "status") != "pending" {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Busy(format!(
                    "transaction {id} still pending after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/dids/{did}`.
    pub async fn did(&self, did: &str) -> Result<Value, Error> {
        json_or_error(self.get(&format!("/v1/dids/{did}")).await?).await
    }

    /// `GET /v1/blocks/{height}`.
    pub async fn block(&self, height: u64) -> Result<Value, Error> {
        json_or_error(self.get(&format!("/v1/blocks/{height}")).await?).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Value, Error> {
        json_or_error(self.get("/v1/health").await?).await
    }

    /// `GET /v1/sync`: the bundle bytes.
    pub async fn sync(&self, since: Option<u64>) -> Result<Vec<u8>, Error> {
        let path = since.map_or("/v1/sync".to_owned(), |h| format!("/v1/sync?since={h}"));
        let resp = self.get(&path).await?;
        if !resp.status().is_success() {
            return Err(json_or_error(resp)
                .await
                .err()
                .unwrap_or_else(|| Error::Consensus("sync failed without an error body".into())));
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
    }
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Height before (None: the snapshot was created).
    pub from: Option<u64>,
    /// Certified height now.
    pub height: u64,
    /// State root of that header.
    pub state_root: [u8; 32],
    /// Header time (Unix seconds).
    pub time: i64,
    /// Bundle size in bytes.
    pub bundle_bytes: usize,
    /// First epoch of the validator set the snapshot now follows.
    pub set_epoch: u64,
    /// Validator-set changes the bundle carried.
    pub set_changes: usize,
}

/// Create or advance the kiosk snapshot at `path` for the pinned `genesis` from `client`. On
/// any failure the old snapshot stays as it was.
pub async fn sync_snapshot(
    client: &Client,
    genesis: &Genesis,
    path: &Path,
) -> Result<SyncReport, Error> {
    let (mut snap, from) = if path.exists() {
        let bytes = std::fs::read(path)?;
        let snap = KioskSnapshot::decode(genesis, &bytes)
            .map_err(|e| Error::Malformed(format!("{}: {e}", path.display())))?;
        let h = snap.header().height;
        (snap, Some(h))
    } else {
        (
            KioskSnapshot::from_genesis(genesis)
                .map_err(|e| Error::Config(format!("genesis: {e}")))?,
            None,
        )
    };
    let bytes = client.sync(from).await?;
    let bundle =
        SyncBundle::decode(&bytes).map_err(|e| Error::Malformed(format!("sync bundle: {e}")))?;
    snap.apply(&bundle)
        .map_err(|e| Error::Malformed(format!("sync bundle refused: {e}")))?;
    write_atomic(path, &snap.encode())?;
    let h = snap.header();
    Ok(SyncReport {
        from,
        height: h.height,
        state_root: h.state_root(),
        time: h.time,
        bundle_bytes: bytes.len(),
        set_epoch: snap.epoch(),
        set_changes: bundle.epochs.len(),
    })
}

/// Check a `GET /v1/dids/{did}` answer: the record's inclusion proof against the public root
/// of the header it names. Returns the header.
pub fn verify_did_answer(
    did: &civis_core::did::Did,
    answer: &Value,
) -> Result<civis_core::chain::block::Header, Error> {
    use civis_core::cbor::CborForm as _;
    use civis_core::chain::smt;
    use civis_core::chain::state::tag;
    let hex_field = |v: &Value, what: &str| -> Result<Vec<u8>, Error> {
        v.as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| Error::Malformed(format!("{what} is not hex")))
    };
    let hash = |v: &Value, what: &str| -> Result<smt::Hash, Error> {
        hex_field(v, what)?
            .try_into()
            .map_err(|_| Error::Malformed(format!("{what} is not 32 bytes")))
    };
    let header = civis_core::chain::block::Header::from_slice(&hex_field(
        field(answer, "header"),
        "header",
    )?)?;
    let record = hex_field(field(field(answer, "proof"), "record"), "record")?;
    let merkle = field(field(answer, "proof"), "merkle");
    let siblings = field(merkle, "siblings")
        .as_array()
        .ok_or_else(|| Error::Malformed("no siblings".into()))?
        .iter()
        .map(|s| hash(s, "sibling"))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = match field(merkle, "leaf") {
        Value::Null => None,
        l => Some((
            hash(field(l, "path"), "leaf path")?,
            hash(field(l, "valueHash"), "leaf value")?,
        )),
    };
    let proof = smt::Proof { siblings, leaf };
    smt::verify(
        &header.public_root,
        &smt::key_path(tag::DID, did.as_str().as_bytes()),
        Some(&smt::value_hash(&record)),
        &proof,
    )
    .map_err(|e| Error::Malformed(format!("DID proof does not verify: {e}")))?;
    Ok(header)
}
