//! Consensus-layer containers, presets and signing-root computation.

pub mod commit_boost;
pub mod containers;
pub mod domain;
pub mod preset;

pub use domain::{DomainType, compute_domain, compute_signing_root};
pub use preset::{Mainnet, Minimal, Preset};
