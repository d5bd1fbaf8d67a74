//! Bulk reads — sync bundles, status lists, committed blocks — served without letting clients
//! (or anyone posing as many) slow the chain.
//!
//! These answers are costly to build (store reads, tree undo and diff, zlib over a list, a block
//! rendered as JSON), the endpoints are unauthenticated, and the node's two cores also run
//! consensus. So (`specs/registry-node.md` §13):
//! - answers are cached: bundles per `(since, certified height)`, blocks per height; a cached
//!   answer is shared with the response without a copy;
//! - the work runs on a blocking thread, never on the runtime threads that run consensus, and
//!   one piece of it at a time (one permit), so at most one core goes to bulk reads;
//! - a request that would wait behind [`BulkLimits::max_queue`] others is answered busy at once
//!   instead of queueing without bound;
//! - each client address has token buckets: one for bundles and status lists, a larger one for
//!   blocks (a block follower reads every block).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::ledger::Ledger;
use crate::store::Store;

/// A token bucket's size and refill.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Requests a client may make at once before it is slowed down.
    pub burst: u32,
    /// Requests a client regains per second.
    pub per_second: f64,
}

/// How much bulk reading one client may ask for, and how much is cached and queued.
#[derive(Debug, Clone, Copy)]
pub struct BulkLimits {
    /// Sync bundles and status lists, per client address.
    pub sync: Allowance,
    /// Committed blocks, per client address.
    pub blocks: Allowance,
    /// Client addresses tracked at once per allowance (idle ones are forgotten first).
    pub max_clients: usize,
    /// Requests waiting for the work permit at most; more are answered busy.
    pub max_queue: usize,
    /// Encoded answers kept (bundles and blocks each).
    pub cache_entries: usize,
    /// Bytes of encoded answers kept (bundles and blocks each).
    pub cache_bytes: usize,
}

impl Default for BulkLimits {
    fn default() -> Self {
        Self {
            sync: Allowance {
                burst: 10,
                per_second: 1.0,
            },
            blocks: Allowance {
                burst: 100,
                per_second: 20.0,
            },
            max_clients: 4096,
            max_queue: 8,
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

/// Token buckets by client address, bounded in number.
#[derive(Debug)]
struct Buckets {
    allowance: Allowance,
    max_clients: usize,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Buckets {
    fn new(allowance: Allowance, max_clients: usize) -> Self {
        Self {
            allowance,
            max_clients,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `client` at `now`; `Err` says when to retry.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.allowance.burst.max(1));
        let rate = self.allowance.per_second;
        let Ok(mut clients) = self.clients.lock() else {
            return Ok(());
        };
        if !clients.contains_key(&client) && clients.len() >= self.max_clients {
            // Forget clients whose buckets have refilled (they lose nothing by it); if none
            // has, the table is full of active clients and the newcomer waits.
            clients.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if clients.len() >= self.max_clients {
                return Err(Duration::from_secs(1));
            }
        }
        let b = clients.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if rate > 0.0 {
                (1.0 - b.tokens) / rate
            } else {
                3600.0
            };
            Err(Duration::from_secs_f64(wait.clamp(1.0, 3600.0)))
        }
    }
}

/// A small cache of encoded answers, bounded in entries and bytes, oldest dropped first.
#[derive(Debug)]
struct Cache<K> {
    entries: usize,
    bytes: usize,
    items: Mutex<VecDeque<(K, Arc<Vec<u8>>)>>,
}

impl<K: PartialEq + Copy> Cache<K> {
    fn new(entries: usize, bytes: usize) -> Self {
        Self {
            entries,
            bytes,
            items: Mutex::new(VecDeque::new()),
        }
    }

    fn get(&self, key: K) -> Option<Arc<Vec<u8>>> {
        let items = self.items.lock().ok()?;
        items
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| Arc::clone(b))
    }

    fn put(&self, key: K, value: Arc<Vec<u8>>) {
        let Ok(mut items) = self.items.lock() else {
            return;
        };
        if value.len() > self.bytes {
            return;
        }
        items.retain(|(k, _)| *k != key);
        items.push_back((key, value));
        while items.len() > self.entries
            || items.iter().map(|(_, b)| b.len()).sum::<usize>() > self.bytes
        {
            items.pop_front();
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct BulkCounters {
    /// Bundles built.
    pub built: AtomicU64,
    /// Bundles served from the cache.
    pub cached: AtomicU64,
    /// Requests refused by a client's allowance.
    pub limited: AtomicU64,
    /// Requests refused because too many waited for the work permit.
    pub busy: AtomicU64,
}

/// Which allowance a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sync bundles and status lists.
    Sync,
    /// Committed blocks.
    Blocks,
}

/// The caches, the work permit and the per-client allowances.
#[derive(Debug)]
pub struct BulkReads {
    limits: BulkLimits,
    sync: Buckets,
    blocks: Buckets,
    bundles: Cache<(Option<u64>, u64)>,
    rendered_blocks: Cache<u64>,
    work: tokio::sync::Semaphore,
    queued: AtomicUsize,
    counters: BulkCounters,
}

/// Holds the work permit; counts the queue while waiting for it.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BulkReads {
    /// With `limits`.
    pub fn new(limits: BulkLimits) -> Self {
        Self {
            limits,
            sync: Buckets::new(limits.sync, limits.max_clients),
            blocks: Buckets::new(limits.blocks, limits.max_clients),
            bundles: Cache::new(limits.cache_entries, limits.cache_bytes),
            rendered_blocks: Cache::new(limits.cache_entries, limits.cache_bytes),
            work: tokio::sync::Semaphore::new(1),
            queued: AtomicUsize::new(0),
            counters: BulkCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> &BulkCounters {
        &self.counters
    }

    /// Take one request of `kind` from `client`'s allowance at `now`; `Err` says when to retry.
    pub fn admit(&self, kind: Kind, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let buckets = match kind {
            Kind::Sync => &self.sync,
            Kind::Blocks => &self.blocks,
        };
        buckets.take(client, now).inspect_err(|_| {
            self.counters.limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Wait for the work permit, unless too many wait for it already.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.limits.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy(
                "the node is busy with other bulk reads; retry in a moment".into(),
            ));
        }
        let _queued = Queued(&self.queued);
        self.work
            .acquire()
            .await
            .map_err(|_| Error::Busy("the node is shutting down".into()))
    }

    /// Run `job` on a blocking thread under the work permit, unless too many wait for it.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self.permit().await?;
        blocking(job).await
    }

    /// The encoded bundle for a kiosk at `since`: from the cache, or read and built once
    /// (store reads and build under the work permit) and cached for everyone asking the same.
    pub async fn bundle<S: Store + Send + Sync + 'static>(
        &self,
        ledger: &Ledger<S>,
        since: Option<u64>,
    ) -> Result<Arc<Vec<u8>>, Error> {
        let cached = || {
            let at = ledger.certified_height()?;
            let hit = self.bundles.get((since, at))?;
            self.counters.cached.fetch_add(1, Ordering::Relaxed);
            Some(hit)
        };
        if let Some(hit) = cached() {
            return Ok(hit);
        }
        let _permit = self.permit().await?;
        // Built while this request waited for the permit?
        if let Some(hit) = cached() {
            return Ok(hit);
        }
        let source = ledger.sync_source(since).await?;
        let key = (since, source.height());
        let bytes = Arc::new(blocking(move || source.build().map(|b| b.encode())).await?);
        self.counters.built.fetch_add(1, Ordering::Relaxed);
        self.bundles.put(key, Arc::clone(&bytes));
        Ok(bytes)
    }

    /// The rendered answer for the block at `height`, if cached.
    pub fn cached_block(&self, height: u64) -> Option<Arc<Vec<u8>>> {
        self.rendered_blocks.get(height)
    }

    /// Render the answer for the block at `height` with `render` on a blocking thread under the
    /// work permit, and cache it.
    pub async fn render_block(
        &self,
        height: u64,
        render: impl FnOnce() -> Result<Vec<u8>, Error> + Send + 'static,
    ) -> Result<Arc<Vec<u8>>, Error> {
        let bytes = Arc::new(self.run(render).await?);
        self.rendered_blocks.put(height, Arc::clone(&bytes));
        Ok(bytes)
    }
}

/// Run `job` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Error::Consensus(format!("bulk read failed: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let reads = BulkReads::new(BulkLimits {
            sync: Allowance {
                burst: 3,
                per_second: 1.0,
            },
            ..BulkLimits::default()
        });
        let t0 = Instant::now();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(reads.admit(Kind::Sync, a, t0).is_ok());
        }
        assert!(reads.admit(Kind::Sync, a, t0).is_err());
        assert!(reads.admit(Kind::Sync, b, t0).is_ok());
        // The block allowance is separate.
        assert!(reads.admit(Kind::Blocks, a, t0).is_ok());
        // One second later one more request is allowed.
        assert!(
            reads
                .admit(Kind::Sync, a, t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            reads
                .admit(Kind::Sync, a, t0 + Duration::from_secs(1))
                .is_err()
        );
        assert_eq!(reads.counters().limited.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_client_table_is_bounded() {
        let buckets = Buckets::new(
            Allowance {
                burst: 1,
                per_second: 0.001,
            },
            2,
        );
        let t0 = Instant::now();
        assert!(buckets.take([10, 0, 0, 1].into(), t0).is_ok());
        assert!(buckets.take([10, 0, 0, 2].into(), t0).is_ok());
        // Both are active (buckets empty): a third client waits rather than growing the table.
        assert!(buckets.take([10, 0, 0, 3].into(), t0).is_err());
        assert_eq!(buckets.clients.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_cache_keeps_its_bounds() {
        let cache = Cache::new(2, 10);
        cache.put(1u64, Arc::new(vec![0; 4]));
        cache.put(2, Arc::new(vec![0; 4]));
        cache.put(3, Arc::new(vec![0; 4]));
        assert!(cache.get(1).is_none());
        assert!(cache.get(2).is_some());
        cache.put(4, Arc::new(vec![0; 9]));
        assert!(cache.get(2).is_none());
        assert!(cache.get(4).is_some());
        // Larger than the whole cache: served, not kept.
        cache.put(5, Arc::new(vec![0; 11]));
        assert!(cache.get(5).is_none());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let reads = Arc::new(BulkReads::new(BulkLimits {
            max_queue: 1,
            ..BulkLimits::default()
        }));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        // One job holds the permit; one more may wait; the third is refused.
        let first = {
            let reads = Arc::clone(&reads);
            tokio::spawn(async move {
                reads
                    .run(move || {
                        let _ = hold.recv();
                        Ok(1)
                    })
                    .await
            })
        };
        while reads.queued.load(Ordering::Relaxed) != 0 || reads.work.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let reads = Arc::clone(&reads);
            tokio::spawn(async move { reads.run(|| Ok(2)).await })
        };
        while reads.queued.load(Ordering::Relaxed) != 1 {
            tokio::task::yield_now().await;
        }
        let third = {
            let reads = Arc::clone(&reads);
            tokio::spawn(async move { reads.run(|| Ok(3)).await })
        };
        let third = third.await.unwrap();
        assert!(matches!(third, Err(Error::Busy(_))));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(reads.counters().busy.load(Ordering::Relaxed), 1);
    }
}
