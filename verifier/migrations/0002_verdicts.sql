-- What the kiosk decided, for counts: when, for which policy, the verdict, its reason, and the
-- snapshot height it rested on. Nothing about the resident: no element value, no device key,
-- no card serial (specs/kiosk-storage.md).
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    policy TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT,
    snapshot_height INTEGER
);
