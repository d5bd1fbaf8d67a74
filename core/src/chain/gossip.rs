//! The mempool gossip batch validators exchange (`specs/registry-node.md` §7.3): a
//! concatenation of `u32 BE length ‖ COSE_Sign1 bytes`, at most [`MAX_BATCH_BYTES`] and
//! [`MAX_BATCH_TXS`] entries, none empty. A batch that breaks a rule is dropped whole.

/// Largest batch sent or accepted.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most transactions in one batch.
pub const MAX_BATCH_TXS: usize = 50_000;

/// Frame `txs` as one batch (the caller keeps it under the limits).
pub fn encode_batch(txs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(txs.iter().map(|t| t.len() + 4).sum());
    for tx in txs {
        let len = u32::try_from(tx.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(tx);
    }
    out
}

/// Split a batch; `None` if it is oversized, holds too many or empty entries, or a length runs
/// past the end.
pub fn decode_batch(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes.len() > MAX_BATCH_BYTES {
        return None;
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len == 0 || len > rest.len() || out.len() >= MAX_BATCH_TXS {
            return None;
        }
        let (tx, rest) = rest.split_at(len);
        out.push(tx);
        bytes = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_damage() {
        let txs = vec![vec![1, 2, 3], vec![7], vec![9; 300]];
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
        // Empty entries would let 4 bytes stand for a whole entry: refused.
        assert!(decode_batch(&[0, 0, 0, 0]).is_none());
        let many = encode_batch(&vec![vec![1]; MAX_BATCH_TXS + 1]);
        assert!(decode_batch(&many).is_none());
    }
}
