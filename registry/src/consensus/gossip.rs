//! Mempool gossip. A validator sends the transactions it admits from clients to every peer, in
//! batches every few milliseconds, so whichever validator leads the next view can include them;
//! without it a transaction waits until the one validator that received it leads. Received
//! transactions are held after a check of their place only (chain, slot, limits; see
//! `Mempool::insert_relayed`): their signatures are checked once, when a block holding them is
//! built or executed. They are not sent on.
//!
//! A batch is a concatenation of `u32 BE length || COSE_Sign1 bytes`, at most
//! [`MAX_BATCH_BYTES`]; a malformed batch is dropped whole.

use std::time::Duration;

use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{Clock, Handle, Spawner};

use crate::ledger::Application;

/// Largest batch sent or accepted.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How often the outbox is flushed.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Frame `txs` as one batch.
pub fn encode_batch(txs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(txs.iter().map(|t| t.len() + 4).sum());
    for tx in txs {
        let len = u32::try_from(tx.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(tx);
    }
    out
}

/// Split a batch; `None` if it is oversized or a length runs past the end.
pub fn decode_batch(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes.len() > MAX_BATCH_BYTES {
        return None;
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (tx, rest) = rest.split_at(len);
        out.push(tx);
        bytes = rest;
    }
    Some(out)
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_damage() {
        let txs = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let batch = encode_batch(&txs);
        let back: Vec<Vec<u8>> = decode_batch(&batch)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(back, txs);
        assert_eq!(decode_batch(&[]).unwrap().len(), 0);
        // Truncated anywhere: refused, not misread.
        for cut in 1..batch.len() {
            let parsed = decode_batch(&batch[..cut]);
            assert!(parsed.is_none() || parsed.unwrap().len() < txs.len());
        }
        assert!(decode_batch(&[0, 0, 0, 9, 1]).is_none());
        assert!(decode_batch(&vec![0; MAX_BATCH_BYTES + 1]).is_none());
    }
}
