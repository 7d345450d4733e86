//! Palisade: a remote signer for Ethereum validators (Web3Signer eth2 API) that checks every
//! block and attestation against an EIP-3076 slashing-protection database before signing.
//!
//! Data flows one way, and each room imports only rooms below it, exactly those it declares
//! (`tests/architecture.rs`): `commands` -> `http` -> `app` -> `protection`, `keys` ->
//! `signing` -> `consensus`, `network` -> `json`, `fsutil`, `process`, `ratelimit`, `types`.
//! A sign request: `http` hands the body to `app::signer`, which has `signing` turn it into a
//! `SigningJob` (signing root computed, nothing secret touched), asks the protection front
//! whether it may be signed (this replica's record, then one committed database transaction),
//! and only then has `keys` produce the signature.

pub mod app;
pub mod commands;
pub mod consensus;
pub mod fsutil;
pub mod http;
pub mod json;
pub mod keys;
pub mod network;
pub mod process;
pub mod protection;
pub mod ratelimit;
pub mod signing;
pub mod types;
