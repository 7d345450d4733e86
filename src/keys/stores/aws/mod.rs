//! AWS Secrets Manager: one secret per key definition (`type: aws-secret`), or every secret
//! whose name or tags match (`--aws-secrets-enabled`, as Web3Signer's bulk loading).

pub mod credentials;
mod secrets_manager;
pub mod sigv4;

pub use credentials::{CredentialSource, Credentials};
pub use secrets_manager::{Filter, SecretsManager};
