//! Slashing protection against a real PostgreSQL (started by the tests) and a real SQLite
//! file: one suite, both backends.

mod backends;
mod concurrency;
mod exhaustive;
mod interchange;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade::protection::rules::Verdict;
use palisade::protection::{
    DbOptions, Interchange, ProtectionError, Recorded, Refusal, SlashableMessage, SlashingDatabase, Watermarks,
};
use palisade::types::{PublicKey, Root, SigningRoot};
use serde_json::Value;

use testkit::slashable::{att, block, in_export, pk, root, slashable};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

const BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

/// A fresh, empty database; the guard keeps a SQLite file alive.
async fn fresh(backend: Backend) -> (SlashingDatabase, Option<tempfile::TempDir>) {
    fresh_with(backend, testkit::db_options()).await
}

async fn fresh_with(backend: Backend, opts: DbOptions) -> (SlashingDatabase, Option<tempfile::TempDir>) {
    match backend {
        Backend::Postgres => {
            let url = testkit::pg::shared().new_database();
            (SlashingDatabase::open(&url, &opts).await.unwrap(), None)
        }
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("p.sqlite").display());
            (SlashingDatabase::open(&url, &opts).await.unwrap(), Some(dir))
        }
    }
}
