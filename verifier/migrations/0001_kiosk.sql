-- The kiosk's database (specs/kiosk-storage.md): its trust snapshot and what its syncs did.
-- Nothing personal: a snapshot holds only chain state, and a sync entry only heights, sizes and
-- the kind of a refusal.
CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    genesis BLOB NOT NULL,
    height INTEGER NOT NULL,
    header_time INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    bytes BLOB NOT NULL
);

CREATE TABLE syncs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    from_height INTEGER,
    height INTEGER,
    bundle_bytes INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT
);
