//! The bridge from commonware's marshal [`Application`](commonware_consensus::Application) and
//! finalized-block reporter to Civis's [`Application`] trait.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use civis_core::chain::block::Block;
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context as SimplexContext;
use commonware_consensus::{Heightable, Reporter};
use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digested, Digestible};
use commonware_runtime::Clock;
use commonware_utils::acknowledgement::Exact;
use futures::StreamExt as _;
use futures::channel::mpsc;

use super::Scheme;
use super::block::ChainBlock;
use crate::ledger::Application;

fn unix_secs(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Collect the blocks between the newest block the application knows and `first` (inclusive),
/// oldest first. `None` if the chain leaves the finalized history (a fork below the committed
/// height) or the stream ends.
async fn unknown_path<A: Application>(
    app: &A,
    first: Digested<ChainBlock>,
    rest: &mut (impl Ancestry<ChainBlock> + 'static),
) -> Option<Vec<Block>> {
    let mut path = Vec::new();
    let mut cur = first;
    let floor = app.committed_height();
    while !app.knows(&cur.digest().0) {
        if cur.height().get() <= floor {
            return None;
        }
        path.push(cur.inner().block().clone());
        cur = rest.next().await?;
    }
    path.reverse();
    Some(path)
}

/// Log a proposal or verification that took long enough to threaten the leader timeout, with
/// the time spent in each phase (waiting for transactions, fetching ancestry, executing).
fn slow(what: &str, start: SystemTime, marks: &[SystemTime], txs: usize) {
    let ms = |a: SystemTime, b: SystemTime| b.duration_since(a).map_or(0, |d| d.as_millis());
    let Some(&end) = marks.last() else { return };
    if ms(start, end) < 300 {
        return;
    }
    let mut phases = Vec::with_capacity(marks.len());
    let mut prev = start;
    for &m in marks {
        phases.push(ms(prev, m));
        prev = m;
    }
    tracing::warn!(
        what,
        txs,
        ?phases,
        total_ms = ms(start, end),
        "slow block step"
    );
}

/// Civis's application as commonware's marshal application.
#[derive(Clone)]
pub struct Adapter<A> {
    app: A,
    idle: Duration,
}

impl<A> Adapter<A> {
    /// Wrap `app`; with nothing pending, a leader waits up to `idle` for transactions before it
    /// proposes (an empty block then), so an idle chain does not spin.
    pub fn new(app: A, idle: Duration) -> Self {
        Self { app, idle }
    }
}

impl<E, A> commonware_consensus::Application<E> for Adapter<A>
where
    E: Clock + Send + 'static,
    A: Application,
{
    type SigningScheme = Scheme;
    type Context = SimplexContext<Digest, PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (rt, _ctx): (E, Self::Context),
        ancestry: impl Ancestry<ChainBlock>,
        _: (),
    ) -> Option<Digested<ChainBlock>> {
        let start = rt.current();
        let mut ancestry = ancestry;
        let parent = ancestry.next().await?;
        let parent_digest = parent.digest().0;
        let deadline = start + self.idle;
        while !self.app.has_pending(&parent_digest) && rt.current() < deadline {
            rt.sleep(Duration::from_millis(20)).await;
        }
        let waited = rt.current();
        let path = unknown_path(&self.app, parent, &mut ancestry).await?;
        let fetched = rt.current();
        let block = self
            .app
            .propose(&parent_digest, &path, unix_secs(rt.current()))?;
        let built = rt.current();
        slow("propose", start, &[waited, fetched, built], block.txs.len());
        let wrapped = ChainBlock::new(block);
        let digest = wrapped.digest();
        Some(Digested::precomputed(wrapped, digest))
    }

    async fn verify(
        &mut self,
        (rt, _ctx): (E, Self::Context),
        ancestry: impl Ancestry<ChainBlock>,
    ) -> bool {
        let start = rt.current();
        let mut ancestry = ancestry;
        let (Some(block), Some(parent)) = (ancestry.next().await, ancestry.next().await) else {
            return false;
        };
        let parent_digest = parent.digest().0;
        let Some(path) = unknown_path(&self.app, parent, &mut ancestry).await else {
            return false;
        };
        let fetched = rt.current();
        let ok = self.app.verify(
            &parent_digest,
            &path,
            block.inner().block(),
            unix_secs(rt.current()),
        );
        let checked = rt.current();
        slow(
            "verify",
            start,
            &[start, fetched, checked],
            block.inner().block().txs.len(),
        );
        ok
    }
}

/// Receives finalized blocks from marshal (synchronously) and hands them to [`commit_loop`].
#[derive(Clone)]
pub struct Finalized {
    tx: mpsc::UnboundedSender<(Digested<ChainBlock>, Exact)>,
}

impl Reporter for Finalized {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, update: Self::Activity) -> commonware_actor::Feedback {
        if let Update::Block(block, ack) = update {
            // If the loop is gone the node is shutting down; marshal stops with the dropped ack.
            let _ = self.tx.unbounded_send((block, ack));
        }
        commonware_actor::Feedback::Ok
    }
}

/// A reporter and the receiving end for [`commit_loop`].
pub fn finalized_channel() -> (
    Finalized,
    mpsc::UnboundedReceiver<(Digested<ChainBlock>, Exact)>,
) {
    let (tx, rx) = mpsc::unbounded();
    (Finalized { tx }, rx)
}
