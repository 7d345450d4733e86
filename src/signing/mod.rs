//! From an HTTP body to a typed signing job: request model, signing-root computation.

pub mod commit_boost;
pub mod job;
pub mod parse;
pub mod policy;
pub mod request;

pub use job::{SignType, SigningJob};
pub use parse::{ParseError, parse_signing_request};
