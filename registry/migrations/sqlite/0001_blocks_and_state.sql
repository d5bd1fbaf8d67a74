-- Finalized blocks, one row per height, and the current value of every state entry.
CREATE TABLE blocks (
    height       BIGINT PRIMARY KEY,
    digest       BLOB   NOT NULL,
    block        BLOB   NOT NULL,
    finalization BLOB
);

CREATE TABLE entries (
    tree   SMALLINT NOT NULL, -- 0 kiosk tree, 1 public tree
    path   BLOB     NOT NULL, -- SHA-256(tag || 0x00 || key)
    tag    BLOB     NOT NULL,
    key    BLOB     NOT NULL,
    value  BLOB     NOT NULL,
    height BIGINT   NOT NULL, -- block that last wrote it
    PRIMARY KEY (tree, path)
);
