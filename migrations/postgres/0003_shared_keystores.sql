-- Keystores imported through the Key Manager API, shared by every replica of the fleet.
-- The keystore is stored as imported (EIP-2335: encrypted by its own password); the password
-- is sealed (AES-256-GCM) with a key derived from the fleet secret each replica is given and
-- that is never written here. A copy of this database alone unlocks no key.
CREATE TABLE shared_keystores (
    pubkey          BYTEA PRIMARY KEY CHECK (length(pubkey) = 48),
    keystore        TEXT NOT NULL,
    sealed_password BYTEA NOT NULL,
    sealed_with     TEXT NOT NULL,        -- the fleet secret's id (an HKDF output, not the secret)
    imported_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    imported_by     TEXT NOT NULL         -- the replica that imported it
);

-- Bumped by every change to shared_keystores, in the same transaction: replicas poll this one
-- number with their database probe and reread the keystores only when it moved.
CREATE TABLE shared_keystores_generation (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    generation BIGINT NOT NULL
);
INSERT INTO shared_keystores_generation (generation) VALUES (0);

-- The fleet secret this database's keystores are sealed with (its id), pinned by the first
-- import: a replica given another secret is refused rather than splitting the key set.
CREATE TABLE fleet_secret (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    secret_id  TEXT NOT NULL,
    pinned_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
