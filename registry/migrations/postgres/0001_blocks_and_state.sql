-- Finalized blocks, one row per height, and the current value of every state entry.
CREATE TABLE blocks (
    height       BIGINT PRIMARY KEY,
    digest       BYTEA  NOT NULL,
    block        BYTEA  NOT NULL,
    finalization BYTEA
);

CREATE TABLE entries (
    tree   SMALLINT NOT NULL, -- 0 kiosk tree, 1 public tree
    path   BYTEA    NOT NULL, -- SHA-256(tag || 0x00 || key)
    tag    BYTEA    NOT NULL,
    key    BYTEA    NOT NULL,
    value  BYTEA    NOT NULL,
    height BIGINT   NOT NULL, -- block that last wrote it
    PRIMARY KEY (tree, path)
);
