-- High watermarks, audited repairs, and a repair generation per validator (see the
-- PostgreSQL migration of the same name).

CREATE TABLE high_watermark (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    slot      INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    set_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor     TEXT NOT NULL
);

ALTER TABLE validators ADD COLUMN high_slot INTEGER;
ALTER TABLE validators ADD COLUMN high_epoch INTEGER;
ALTER TABLE validators ADD COLUMN repairs INTEGER NOT NULL DEFAULT 0;

CREATE TABLE watermark_repairs (
    id             INTEGER PRIMARY KEY,
    validator_id   INTEGER NOT NULL REFERENCES validators (id),
    repaired_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    old_block_slot INTEGER,
    old_att_source INTEGER,
    old_att_target INTEGER,
    new_block_slot INTEGER,
    new_att_source INTEGER,
    new_att_target INTEGER,
    discarded      TEXT NOT NULL
);

CREATE TABLE replicas (
    id      TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    seen_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
