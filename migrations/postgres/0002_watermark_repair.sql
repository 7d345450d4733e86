-- High watermarks, audited repairs, and a repair generation per validator.

-- The operator's upper bound for all keys: nothing at or above it is signed (as Web3Signer's
-- high watermark). One row at most; no row, no bound.
CREATE TABLE high_watermark (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    slot      BIGINT NOT NULL,
    epoch     BIGINT NOT NULL,
    set_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT NOT NULL
);

ALTER TABLE validators
    ADD COLUMN high_slot  BIGINT,   -- this key's own high watermark (overrides the global one)
    ADD COLUMN high_epoch BIGINT,
    -- Bumped by every repair: a replica that remembers what it committed for this key drops
    -- that memory when the database says the key was repaired since.
    ADD COLUMN repairs    INTEGER NOT NULL DEFAULT 0,
    -- The block slot or attestation target this row held before its last signing, returned
    -- by the signing statement for the replica's memory (a database that went back in time).
    ADD COLUMN prev_mark  BIGINT;

-- Every repair: who, why, the watermarks before and after, and the history it discarded.
CREATE TABLE watermark_repairs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    validator_id   INTEGER NOT NULL REFERENCES validators (id),
    repaired_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    old_block_slot BIGINT,
    old_att_source BIGINT,
    old_att_target BIGINT,
    new_block_slot BIGINT,
    new_att_source BIGINT,
    new_att_target BIGINT,
    discarded      TEXT NOT NULL  -- JSON: the signed messages removed from the history
);

-- Every replica's heartbeat: its readiness probe is this write, committed as durably as a
-- signing (a missing synchronous standby, a read-only primary or a full disk fail it), and the
-- live replicas are counted from it.
CREATE TABLE replicas (
    id      TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
