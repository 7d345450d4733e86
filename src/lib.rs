//! Palisade: a remote signer for Ethereum validators (Web3Signer eth2 API) that checks every
//! block and attestation against an EIP-3076 slashing-protection database before signing.
//!
//! Data flows one way: `http` parses a request into a `signing::SigningJob` (signing root
//! computed, nothing secret touched), `service` asks `protection` whether it may be signed
//! (one database transaction, committed), and only then `keys` produces the signature.

pub mod consensus;
pub mod keys;
pub mod network;
pub mod protection;
pub mod signing;
pub mod types;
