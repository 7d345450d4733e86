-- Palisade slashing-protection schema (SQLite). Same tables and meaning as the PostgreSQL
-- schema: uint64 slots and epochs are stored as INTEGER through the map stored = u64 - 2^63,
-- roots are 32-byte BLOBs, NULL means "absent or all zero".

CREATE TABLE chain (
    singleton               INTEGER PRIMARY KEY CHECK (singleton = 1),
    genesis_validators_root BLOB NOT NULL CHECK (length(genesis_validators_root) = 32),
    pinned_at               TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE validators (
    id              INTEGER PRIMARY KEY,
    pubkey          BLOB NOT NULL UNIQUE CHECK (length(pubkey) = 48),
    enabled         INTEGER NOT NULL DEFAULT 1,
    block_slot      INTEGER,
    block_root      BLOB CHECK (length(block_root) = 32),
    att_source      INTEGER,
    att_target      INTEGER,
    att_root        BLOB CHECK (length(att_root) = 32),
    att_root_source INTEGER,
    updated_at      TEXT
);

CREATE TABLE signed_blocks (
    validator_id INTEGER NOT NULL REFERENCES validators (id),
    slot         INTEGER NOT NULL,
    signing_root BLOB CHECK (length(signing_root) = 32),
    recorded_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    client       TEXT,
    imported     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (validator_id, slot)
) WITHOUT ROWID;

CREATE TABLE signed_attestations (
    validator_id INTEGER NOT NULL REFERENCES validators (id),
    source_epoch INTEGER NOT NULL,
    target_epoch INTEGER NOT NULL,
    signing_root BLOB CHECK (length(signing_root) = 32),
    recorded_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    client       TEXT,
    imported     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (validator_id, target_epoch)
) WITHOUT ROWID;
