//! Serving sync bundles without letting kiosks (or anyone posing as one) slow the chain.
//!
//! `/v1/sync` is unauthenticated and a bundle is costly to build (store reads, tree undo, a
//! diff), so: encoded bundles are cached per `(since, certified height)` and served to every
//! kiosk asking the same; at most one bundle is built at a time, on a blocking thread, never on
//! the threads that run consensus; and each client address has a token bucket, so one client
//! looping cannot starve the others (`specs/registry-node.md` §13).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::ledger::Ledger;
use crate::store::Store;

/// How much sync work one client may ask for, and how much is cached.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// Requests a client may make at once before it is slowed down.
    pub burst: u32,
    /// Requests a client regains per second.
    pub per_second: f64,
    /// Client addresses tracked at once (idle ones are forgotten first).
    pub max_clients: usize,
    /// Encoded bundles kept.
    pub cache_entries: usize,
    /// Bytes of encoded bundles kept.
    pub cache_bytes: usize,
}

impl Default for SyncLimits {
    fn default() -> Self {
        Self {
            burst: 10,
            per_second: 1.0,
            max_clients: 4096,
            cache_entries: 32,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Bundles built.
    pub built: AtomicU64,
    /// Bundles served from the cache.
    pub cached: AtomicU64,
    /// Requests refused by a client's token bucket.
    pub limited: AtomicU64,
}

type Key = (Option<u64>, u64);

/// The cache, the build permit and the per-client buckets.
#[derive(Debug)]
pub struct SyncServer {
    limits: SyncLimits,
    cache: Mutex<VecDeque<(Key, Arc<Vec<u8>>)>>,
    build: tokio::sync::Semaphore,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
    counters: SyncCounters,
}

impl SyncServer {
    /// A server with `limits`.
    pub fn new(limits: SyncLimits) -> Self {
        Self {
            limits,
            cache: Mutex::new(VecDeque::new()),
            build: tokio::sync::Semaphore::new(1),
            clients: Mutex::new(HashMap::new()),
            counters: SyncCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    /// Take one request from `client`'s bucket at `now`; `Err` says when to retry.
    pub fn admit(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limits.burst.max(1));
        let Ok(mut clients) = self.clients.lock() else {
            return Ok(());
        };
        if !clients.contains_key(&client) && clients.len() >= self.limits.max_clients {
            // Forget clients whose buckets have refilled (they lose nothing by it); if none
            // has, the table is full of active clients and the newcomer waits.
            let rate = self.limits.per_second;
            clients.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if clients.len() >= self.limits.max_clients {
                self.counters.limited.fetch_add(1, Ordering::Relaxed);
                return Err(Duration::from_secs(1));
            }
        }
        let b = clients.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.limits.per_second;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            self.counters.limited.fetch_add(1, Ordering::Relaxed);
            let wait = if self.limits.per_second > 0.0 {
                (1.0 - b.tokens) / self.limits.per_second
            } else {
                3600.0
            };
            Err(Duration::from_secs_f64(wait.clamp(1.0, 3600.0)))
        }
    }

    fn cached(&self, key: Key) -> Option<Arc<Vec<u8>>> {
        let cache = self.cache.lock().ok()?;
        cache.iter().find(|(k, _)| *k == key).map(|(_, b)| {
            self.counters.cached.fetch_add(1, Ordering::Relaxed);
            Arc::clone(b)
        })
    }

    fn remember(&self, key: Key, bytes: Arc<Vec<u8>>) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if bytes.len() > self.limits.cache_bytes {
            return;
        }
        cache.retain(|(k, _)| *k != key);
        cache.push_back((key, bytes));
        while cache.len() > self.limits.cache_entries
            || cache.iter().map(|(_, b)| b.len()).sum::<usize>() > self.limits.cache_bytes
        {
            cache.pop_front();
        }
    }

    /// The encoded bundle for a kiosk at `since`: from the cache, or built once (one build at
    /// a time, on a blocking thread) and cached for everyone asking the same.
    pub async fn bundle<S: Store + Send + Sync + 'static>(
        &self,
        ledger: &Ledger<S>,
        since: Option<u64>,
    ) -> Result<Arc<Vec<u8>>, Error> {
        if let Some(at) = ledger.certified_height()
            && let Some(hit) = self.cached((since, at))
        {
            return Ok(hit);
        }
        let _permit = self
            .build
            .acquire()
            .await
            .map_err(|_| Error::Busy("the node is shutting down".into()))?;
        // Someone may have built it while this request waited for the permit.
        if let Some(at) = ledger.certified_height()
            && let Some(hit) = self.cached((since, at))
        {
            return Ok(hit);
        }
        let source = ledger.sync_source(since).await?;
        let key = (since, source.height());
        let bytes = tokio::task::spawn_blocking(move || source.build().map(|b| b.encode()))
            .await
            .map_err(|e| Error::Consensus(format!("bundle build failed: {e}")))??;
        let bytes = Arc::new(bytes);
        self.counters.built.fetch_add(1, Ordering::Relaxed);
        self.remember(key, Arc::clone(&bytes));
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let server = SyncServer::new(SyncLimits {
            burst: 3,
            per_second: 1.0,
            ..SyncLimits::default()
        });
        let t0 = Instant::now();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(server.admit(a, t0).is_ok());
        }
        assert!(server.admit(a, t0).is_err());
        assert!(server.admit(b, t0).is_ok());
        // One second later one more request is allowed.
        assert!(server.admit(a, t0 + Duration::from_secs(1)).is_ok());
        assert!(server.admit(a, t0 + Duration::from_secs(1)).is_err());
        assert_eq!(server.counters().limited.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_client_table_is_bounded() {
        let server = SyncServer::new(SyncLimits {
            burst: 1,
            per_second: 0.001,
            max_clients: 2,
            ..SyncLimits::default()
        });
        let t0 = Instant::now();
        assert!(server.admit([10, 0, 0, 1].into(), t0).is_ok());
        assert!(server.admit([10, 0, 0, 2].into(), t0).is_ok());
        // Both are active (buckets empty): a third client waits rather than growing the table.
        assert!(server.admit([10, 0, 0, 3].into(), t0).is_err());
        assert_eq!(server.clients.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_cache_keeps_its_bounds() {
        let server = SyncServer::new(SyncLimits {
            cache_entries: 2,
            cache_bytes: 10,
            ..SyncLimits::default()
        });
        server.remember((None, 1), Arc::new(vec![0; 4]));
        server.remember((None, 2), Arc::new(vec![0; 4]));
        server.remember((Some(1), 2), Arc::new(vec![0; 4]));
        assert!(server.cached((None, 1)).is_none());
        assert!(server.cached((None, 2)).is_some());
        server.remember((None, 3), Arc::new(vec![0; 9]));
        assert!(server.cached((None, 2)).is_none());
        assert!(server.cached((None, 3)).is_some());
        // Larger than the whole cache: served, not kept.
        server.remember((None, 4), Arc::new(vec![0; 11]));
        assert!(server.cached((None, 4)).is_none());
    }
}
