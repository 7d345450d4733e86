-- Palisade slashing-protection schema (PostgreSQL).
--
-- uint64 slots and epochs are stored in BIGINT through an order-preserving map:
--   stored = u64 - 2^63   (u64 0 -> -9223372036854775808, u64::MAX -> 9223372036854775807)
-- so the full u64 range fits, comparisons keep their meaning, and nothing wraps. The *_readable
-- views below show the real numbers. Roots are 32 bytes; NULL means "absent or all zero".

-- The chain this database protects. One row; a request or import for another chain is refused.
CREATE TABLE chain (
    singleton               BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    genesis_validators_root BYTEA NOT NULL CHECK (length(genesis_validators_root) = 32),
    pinned_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per validator: the watermarks the signing decision reads (O(1), whatever the
-- history's length). Each signing updates this row conditionally, which also serialises
-- every signing for one validator across all replicas.
CREATE TABLE validators (
    id              INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pubkey          BYTEA NOT NULL UNIQUE CHECK (length(pubkey) = 48),
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    block_slot      BIGINT,   -- highest block slot signed or imported
    block_root      BYTEA CHECK (length(block_root) = 32),  -- root Palisade signed at block_slot
    att_source      BIGINT,   -- highest attestation source epoch signed or imported
    att_target      BIGINT,   -- highest attestation target epoch signed or imported
    att_root        BYTEA CHECK (length(att_root) = 32),    -- root Palisade signed at att_target
    att_root_source BIGINT,   -- source epoch of that attestation
    updated_at      TIMESTAMPTZ
);

-- History for export and audit; not on the decision path. The primary keys are a backstop:
-- two different blocks at one slot, or attestations at one target, can never both be recorded.
CREATE TABLE signed_blocks (
    validator_id INTEGER NOT NULL REFERENCES validators (id),
    slot         BIGINT NOT NULL,
    signing_root BYTEA CHECK (length(signing_root) = 32),
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    client       TEXT,                 -- who asked (remote address, client certificate); NULL if imported
    imported     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (validator_id, slot)
);

CREATE TABLE signed_attestations (
    validator_id INTEGER NOT NULL REFERENCES validators (id),
    source_epoch BIGINT NOT NULL,
    target_epoch BIGINT NOT NULL,
    signing_root BYTEA CHECK (length(signing_root) = 32),
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    client       TEXT,
    imported     BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (validator_id, target_epoch)
);

CREATE VIEW validators_readable AS
SELECT id, '0x' || encode(pubkey, 'hex') AS pubkey, enabled,
       block_slot::numeric + 9223372036854775808 AS block_slot,
       att_source::numeric + 9223372036854775808 AS att_source,
       att_target::numeric + 9223372036854775808 AS att_target,
       updated_at
FROM validators;

CREATE VIEW signed_blocks_readable AS
SELECT '0x' || encode(v.pubkey, 'hex') AS pubkey,
       b.slot::numeric + 9223372036854775808 AS slot,
       '0x' || encode(b.signing_root, 'hex') AS signing_root,
       b.recorded_at, b.client, b.imported
FROM signed_blocks b JOIN validators v ON v.id = b.validator_id;

CREATE VIEW signed_attestations_readable AS
SELECT '0x' || encode(v.pubkey, 'hex') AS pubkey,
       a.source_epoch::numeric + 9223372036854775808 AS source_epoch,
       a.target_epoch::numeric + 9223372036854775808 AS target_epoch,
       '0x' || encode(a.signing_root, 'hex') AS signing_root,
       a.recorded_at, a.client, a.imported
FROM signed_attestations a JOIN validators v ON v.id = a.validator_id;
