//! Validator keys: EIP-2335 keystores, YAML key definitions, parallel loading and the
//! in-memory registry the signing path reads.

pub mod definitions;
pub mod keystore;
pub mod loader;
pub mod origin;
pub mod password;
pub mod registry;
pub mod secret;

pub use loader::KeyOptions;
pub use origin::{Origin, OriginKind};
pub use registry::{KeyRegistry, Lookup};
pub use secret::SecretKey;
