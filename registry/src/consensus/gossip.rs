//! Mempool gossip. A validator sends the transactions it admits from clients to every peer, in
//! batches every few milliseconds, so whichever validator leads the next view can include them;
//! without it a transaction waits until the one validator that received it leads. Received
//! transactions are held after a check of their place only (chain, slot, limits; see
//! `Mempool::insert_relayed`): their signatures are checked once, when a block holding them is
//! built or executed. They are not sent on.
//!
//! The batch format is in `civis_core::chain::gossip`; a malformed batch is dropped whole.

use std::time::Duration;

use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Spawner};

use crate::ledger::Application;

pub use civis_core::chain::gossip::{MAX_BATCH_BYTES, decode_batch, encode_batch};

/// How often the outbox is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Run gossip on one p2p channel until the context stops: one task flushes the outbox, one
/// admits what peers send.
pub fn start<E, S, R, A>(context: E, mut sender: S, mut receiver: R, app: A) -> [Handle<()>; 2]
where
    E: Clock + Spawner,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    A: Application,
{
    let outgoing = context.child("gossip_out").spawn({
        let app = app.clone();
        move |ctx| async move {
            loop {
                ctx.sleep(FLUSH_EVERY).await;
                let txs = app.take_gossip(MAX_BATCH_BYTES.saturating_sub(64 * 1024));
                if !txs.is_empty() {
                    let _ = sender.send(Recipients::All, encode_batch(&txs), false);
                }
            }
        }
    });
    let incoming = context.child("gossip_in").spawn(move |_| async move {
        while let Ok((_from, batch)) = receiver.recv().await {
            let Some(txs) = decode_batch(batch.as_ref()) else {
                continue;
            };
            for tx in txs {
                app.gossiped(tx);
            }
        }
    });
    [outgoing, incoming]
}
