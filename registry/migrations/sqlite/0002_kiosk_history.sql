-- Kiosk-tree writes with the value each replaced, so that a node can rebuild the kiosk tree of
-- an older height and serve a delta sync bundle from it.
CREATE TABLE kiosk_history (
    height    BIGINT NOT NULL, -- block that wrote it
    tag       BLOB   NOT NULL,
    key       BLOB   NOT NULL,
    old_value BLOB             -- NULL: the write created the entry
);
CREATE INDEX kiosk_history_height ON kiosk_history (height);
