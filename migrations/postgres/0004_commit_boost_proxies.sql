-- Commit-Boost proxy keys, shared by every replica of the fleet: a proxy made on one replica
-- signs on all. The keystore is encrypted with the proxy keystores' password, which each
-- replica reads from its own file and which is never written here.
CREATE TABLE commit_boost_proxies (
    proxy       BYTEA PRIMARY KEY CHECK (length(proxy) IN (33, 48)),
    delegator   BYTEA NOT NULL CHECK (length(delegator) = 48),
    scheme      TEXT NOT NULL CHECK (scheme IN ('bls', 'ecdsa')),
    module      TEXT,
    keystore    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT NOT NULL
);
