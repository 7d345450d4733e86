//! The application: the signer (parse, protect, sign, record the outcome), the Key Manager
//! operations, key reloads, the health verdicts and the metrics they keep. No HTTP and no
//! SQL here.

pub mod commit_boost;
pub mod disabled;
pub mod health;
pub mod keymanager;
pub mod metrics;
pub mod reload;
pub mod shared_keystores;
pub mod signer;
pub mod slashing;
