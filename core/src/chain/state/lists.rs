//! Status lists in the kiosk tree: one metadata entry per list and its bytes in fixed-size
//! chunks, so a status change rewrites (and a sync carries) one chunk, not the list.

use std::collections::BTreeMap;

use super::records::ListInfo;
use super::tree::Tree;
use crate::chain::table::Table;
use crate::status::StatusList;

/// Bytes of list data per status-list chunk leaf.
pub const STATUS_CHUNK: usize = 1024;
/// Largest status list a transaction may create (entries).
pub const MAX_STATUS_ENTRIES: u64 = 16 * 1024 * 1024;

/// The key of chunk `chunk` of the list at `uri`: URI ‖ 0x00 ‖ chunk number (u64 BE). Read from
/// the end, the split is unique (a fixed 9-byte suffix).
pub fn chunk_key(uri: &str, chunk: u64) -> Vec<u8> {
    let mut k = uri.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// The inverse of [`chunk_key`]: the list URI and chunk number.
pub fn split_chunk_key(key: &[u8]) -> Option<(String, u64)> {
    let (uri, n) = key.split_at_checked(key.len().checked_sub(9)?)?;
    let (zero, n) = n.split_first()?;
    if *zero != 0 {
        return None;
    }
    Some((
        String::from_utf8(uri.to_vec()).ok()?,
        u64::from_be_bytes(n.try_into().ok()?),
    ))
}

/// Bytes of a list of `info.size` entries.
pub fn list_bytes(info: &ListInfo) -> u64 {
    info.size.div_ceil(info.bits.per_byte())
}

/// Number of chunks of a list.
pub fn chunk_count(info: &ListInfo) -> u64 {
    list_bytes(info).div_ceil(STATUS_CHUNK as u64)
}

/// Why the status lists of a tree cannot be reassembled. A tree that reproduced a certified root
/// never fails this; a snapshot file or a store that does is corrupt or forged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A metadata entry that does not decode, or names an impossible list.
    #[error("status list {0}: bad metadata")]
    Metadata(String),
    /// A chunk key that does not decode.
    #[error("a status chunk has a malformed key")]
    ChunkKey,
    /// Chunks of a list that no metadata entry names.
    #[error("status chunks of an unknown list {0}")]
    Orphan(String),
    /// A list whose chunks are not exactly 0..n-1 with the sizes its metadata implies.
    #[error("status list {uri}: chunk {chunk} is missing, extra or of the wrong size")]
    Chunks {
        /// The list.
        uri: String,
        /// The first chunk that is wrong.
        chunk: u64,
    },
    /// Two lists with one id.
    #[error("two status lists have id {0}")]
    DuplicateId(u64),
}

/// Reassemble every status list of a kiosk tree from its metadata and chunks, by URI, checking
/// that each list's chunks are exactly 0..n-1, each full but the last, and add up to its size.
pub fn status_lists(tree: &Tree) -> Result<BTreeMap<String, (ListInfo, StatusList)>, ListError> {
    let mut chunks: BTreeMap<String, BTreeMap<u64, &[u8]>> = BTreeMap::new();
    let mut metas = BTreeMap::new();
    for e in tree.entries() {
        match e.table {
            Table::StatusMeta => {
                let uri = String::from_utf8(e.key.clone())
                    .map_err(|_| ListError::Metadata("(not UTF-8)".into()))?;
                let info = ListInfo::decode(&e.value)
                    .filter(|i| i.size > 0 && i.size <= MAX_STATUS_ENTRIES)
                    .ok_or_else(|| ListError::Metadata(uri.clone()))?;
                metas.insert(uri, info);
            }
            Table::StatusChunk => {
                let (uri, n) = split_chunk_key(&e.key).ok_or(ListError::ChunkKey)?;
                chunks.entry(uri).or_default().insert(n, &e.value);
            }
            _ => {}
        }
    }
    if let Some(uri) = chunks.keys().find(|u| !metas.contains_key(*u)) {
        return Err(ListError::Orphan(uri.clone()));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for (uri, info) in metas {
        if !ids.insert(info.id) {
            return Err(ListError::DuplicateId(info.id));
        }
        let mine = chunks.remove(&uri).unwrap_or_default();
        let total = list_bytes(&info);
        let n = chunk_count(&info);
        if mine.len() as u64 != n {
            let chunk = (0..n).find(|c| !mine.contains_key(c)).unwrap_or(n);
            return Err(ListError::Chunks { uri, chunk });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (expected, (c, data)) in mine.into_iter().enumerate() {
            let full = STATUS_CHUNK as u64;
            let want = total.saturating_sub(c.saturating_mul(full)).min(full);
            if c != expected as u64 || data.len() as u64 != want {
                return Err(ListError::Chunks {
                    uri,
                    chunk: expected as u64,
                });
            }
            bytes.extend_from_slice(data);
        }
        let list = StatusList::from_bytes(info.bits, bytes);
        out.insert(uri, (info, list));
    }
    Ok(out)
}
