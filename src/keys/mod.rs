//! Validator keys: where they come from (one `KeySource` per place: keystore folders, YAML
//! definitions, secret stores), how they are unlocked and reloaded, and the in-memory
//! registry the signing path reads through the `SigningKey` handle.

pub mod dealing;
pub mod definitions;
pub mod fleet;
pub mod handle;
pub mod keystore;
pub mod keystore_v3;
pub mod loader;
pub mod origin;
pub mod password;
pub mod proxy;
pub mod refresh;
pub mod registry;
pub mod reshare;
pub mod secret;
pub mod source;
pub mod sources;
pub mod stores;
pub mod threshold;

pub use handle::{KeyError, SigningKey};
pub use loader::{KeyLoader, LoadReport};
pub use origin::{Origin, OriginKind};
pub use registry::{KeyRegistry, Lookup};
pub use secret::SecretKey;
pub use source::KeySource;
