//! The client of a registry node's HTTP API (`specs/registry-api.md`).
//!
//! A registry node may lie or flood: every answer is read under a hard size cap as it streams
//! in (a `Content-Length` over the cap is refused before a byte of the body is read), JSON is
//! parsed into the typed bodies of `civis_core::api`, and nothing here trusts what it parsed —
//! proofs and bundles are checked by core. Several node URLs may be given: a request that cannot
//! reach one node, or finds it busy, goes to the next.

use std::time::Duration;

use civis_core::api::{
    BlockAnswer, DidAnswer, ErrorBody, Health, StatusListAnswer, Submitted, TxAnswer, TxOutcome,
};
use civis_core::chain::light::{MAX_BUNDLE_LEN, SyncBundle};
use civis_core::did::Did;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Largest JSON answer read (a DID answer is a few KiB; a block with many transactions more).
pub const MAX_JSON_LEN: usize = 32 * 1024 * 1024;

/// A client of one registry, reachable through one or more node URLs.
#[derive(Debug, Clone)]
pub struct Client {
    bases: Vec<String>,
    http: reqwest::Client,
    max_bundle: usize,
}

/// How long a request may take before the next node is tried.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7200`).
    pub fn new(base: &str) -> Result<Self, Error> {
        Self::with_nodes(&[base])
    }

    /// A client that tries `bases` in turn.
    pub fn with_nodes(bases: &[&str]) -> Result<Self, Error> {
        if bases.is_empty() {
            return Err(Error::Unreachable("no registry URL given".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(Self {
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            http,
            max_bundle: MAX_BUNDLE_LEN,
        })
    }

    /// Refuse sync bundles larger than `max` bytes (default and ceiling: core's bundle limit).
    pub fn with_max_bundle(mut self, max: usize) -> Self {
        self.max_bundle = max.min(MAX_BUNDLE_LEN);
        self
    }

    /// The node URLs, in the order they are tried.
    pub fn nodes(&self) -> &[String] {
        &self.bases
    }

    /// Send a request built by `make` to each node in turn until one answers without a
    /// transient failure; returns the answer's body, read under `cap`.
    async fn exchange(
        &self,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        cap: usize,
    ) -> Result<Vec<u8>, Error> {
        self.exchange_with(make, cap, None).await
    }

    /// [`Self::exchange`], telling `progress` the bytes received so far and the declared
    /// length, as the body streams in.
    async fn exchange_with(
        &self,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        cap: usize,
        progress: Option<&Progress<'_>>,
    ) -> Result<Vec<u8>, Error> {
        let mut last = None;
        for base in &self.bases {
            let result = async {
                let resp = make(&self.http, base)
                    .send()
                    .await
                    .map_err(|e| Error::Unreachable(format!("{base}: {e}")))?;
                let status = resp.status();
                let body = read_capped(resp, cap, progress).await?;
                if status.is_success() {
                    Ok(body)
                } else {
                    Err(error_of(status.as_u16(), &body))
                }
            }
            .await;
            match result {
                Err(e) if e.is_transient() => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable("no registry URL".into())))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let body = self
            .exchange(|http, base| http.get(format!("{base}{path}")), MAX_JSON_LEN)
            .await?;
        parse(&body)
    }

    /// `POST /v1/transactions`: the transaction's COSE_Sign1 bytes.
    pub async fn submit(&self, tx: &[u8]) -> Result<Submitted, Error> {
        let body = self
            .exchange(
                |http, base| {
                    http.post(format!("{base}/v1/transactions"))
                        .header("content-type", "application/cose")
                        .body(tx.to_vec())
                },
                MAX_JSON_LEN,
            )
            .await?;
        parse(&body)
    }

    /// `GET /v1/transactions/{id}`.
    pub async fn transaction(&self, id: &str) -> Result<TxAnswer, Error> {
        self.get_json(&format!("/v1/transactions/{id}")).await
    }

    /// Poll until transaction `id` is included or refused, up to `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TxAnswer, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self.transaction(id).await?;
            if answer.outcome != TxOutcome::Pending {
                return Ok(answer);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(id.to_owned(), timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submit and wait for the outcome.
    pub async fn submit_and_wait(&self, tx: &[u8], timeout: Duration) -> Result<TxAnswer, Error> {
        let id = self.submit(tx).await?.id;
        self.wait(&id, timeout).await
    }

    /// `GET /v1/dids/{did}` (unverified: see [`DidAnswer::verify`]).
    pub async fn did(&self, did: &Did) -> Result<DidAnswer, Error> {
        self.get_json(&format!("/v1/dids/{did}")).await
    }

    /// `GET /v1/blocks/{height}`.
    pub async fn block(&self, height: u64) -> Result<BlockAnswer, Error> {
        self.get_json(&format!("/v1/blocks/{height}")).await
    }

    /// `GET /v1/status-lists/{id}` (a list's number or URI).
    pub async fn status_list(&self, id: &str) -> Result<StatusListAnswer, Error> {
        self.get_json(&format!("/v1/status-lists/{id}")).await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, Error> {
        self.get_json("/v1/health").await
    }

    /// `GET /v1/sync`: the bundle bytes, at most the bundle limit.
    pub async fn sync_bytes(&self, since: Option<u64>) -> Result<Vec<u8>, Error> {
        self.sync_bytes_with(since, None).await
    }

    /// [`Self::sync_bytes`], reporting the download to `progress` (bytes so far, declared
    /// length) as it streams in: a cold sync is megabytes.
    pub async fn sync_bytes_with(
        &self,
        since: Option<u64>,
        progress: Option<&Progress<'_>>,
    ) -> Result<Vec<u8>, Error> {
        let path = since.map_or("/v1/sync".to_owned(), |h| format!("/v1/sync?since={h}"));
        self.exchange_with(
            |http, base| http.get(format!("{base}{path}")),
            self.max_bundle,
            progress,
        )
        .await
    }

    /// `GET /v1/sync`, decoded (not yet checked: the kiosk's light client does that).
    pub async fn sync(&self, since: Option<u64>) -> Result<(SyncBundle, usize), Error> {
        self.sync_with(since, None).await
    }

    /// [`Self::sync`], reporting the download to `progress`.
    pub async fn sync_with(
        &self,
        since: Option<u64>,
        progress: Option<&Progress<'_>>,
    ) -> Result<(SyncBundle, usize), Error> {
        let bytes = self.sync_bytes_with(since, progress).await?;
        let bundle = SyncBundle::decode(&bytes)
            .map_err(|e| Error::Malformed(format!("sync bundle: {e}")))?;
        Ok((bundle, bytes.len()))
    }
}

/// A download's progress: bytes received so far, and the length the server declared (if any).
pub type Progress<'a> = dyn Fn(u64, Option<u64>) + Send + Sync + 'a;

/// Read a response body, refusing more than `cap` bytes: by its declared length before reading
/// anything, and by counting as it streams in.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    progress: Option<&Progress<'_>>,
) -> Result<Vec<u8>, Error> {
    let declared = resp.content_length();
    if let Some(len) = resp.content_length()
        && len > cap as u64
    {
        return Err(Error::Malformed(format!(
            "answer of {len} bytes is larger than the {cap}-byte limit"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Unreachable(format!("reading the answer: {e}")))?
    {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(Error::Malformed(format!(
                "answer larger than the {cap}-byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
        if let Some(p) = progress {
            p(body.len() as u64, declared);
        }
    }
    Ok(body)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Malformed(format!("unexpected answer: {e}")))
}

/// The error an HTTP status and error body stand for.
fn error_of(status: u16, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| format!("HTTP {status} without an error body"));
    match status {
        404 => Error::NotFound(message),
        409 => Error::Conflict(message),
        429 | 503 => Error::Busy(message),
        400..=499 => Error::Refused(message),
        _ => Error::Node(format!("HTTP {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A lying node on loopback: answers every request with `head` and then `body_len` bytes of
    /// `x`, in 64 KiB writes (stopping early when the client hangs up).
    async fn liar(head: String, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let head = head.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0;
                    while sent < body_len {
                        let n = chunk.len().min(body_len - sent);
                        if s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_bundle_download_reports_its_progress_up_to_the_declared_length() {
        let len = 1024 * 1024 + 17;
        let url = liar(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: {len}\r\n\r\n"
            ),
            len,
        )
        .await;
        let c = Client::new(&url).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let record = |bytes: u64, total: Option<u64>| seen.lock().unwrap().push((bytes, total));
        let body = c.sync_bytes_with(None, Some(&record)).await.unwrap();
        assert_eq!(body.len(), len);
        let seen = seen.into_inner().unwrap();
        assert!(seen.len() > 1, "one report for a megabyte: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "not increasing");
        assert!(seen.iter().all(|(_, t)| *t == Some(len as u64)));
        assert_eq!(seen.last().unwrap().0, len as u64);
    }

    #[tokio::test]
    async fn a_declared_oversized_bundle_is_refused_before_reading_it() {
        let url = liar(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\ncontent-length: {}\r\n\r\n",
                400 * 1024 * 1024
            ),
            1024,
        )
        .await;
        let c = Client::new(&url).unwrap();
        let e = c.sync_bytes(None).await.unwrap_err();
        assert!(
            matches!(&e, Error::Malformed(m) if m.contains("limit")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_undeclared_stream_is_cut_at_the_cap() {
        // Chunked, no length: the client stops reading at the cap (here 1 MiB) although the
        // node would send 64 MiB.
        let url = liar(
            "HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\nconnection: close\r\n\r\n".into(),
            64 * 1024 * 1024,
        )
        .await;
        let c = Client::new(&url).unwrap().with_max_bundle(1024 * 1024);
        let e = c.sync_bytes(None).await.unwrap_err();
        assert!(
            matches!(&e, Error::Malformed(m) if m.contains("limit")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_next_node_is_tried_when_one_is_down() {
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let body = r#"{"error":"not_found","message":"nothing here"}"#;
        let up = liar(
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            0,
        )
        .await;
        let c = Client::with_nodes(&[&down, &up]).unwrap();
        let e = c.transaction(&"0".repeat(64)).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m == "nothing here"),
            "{e}"
        );
    }
}
