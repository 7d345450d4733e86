//! Palisade's test kit, shared by the integration tests and `palisade-bench`: throwaway
//! PostgreSQL clusters and the real `palisade` binary, both as child processes that die with
//! the process that started them, plus request builders and the test data's location.

pub mod http;
pub mod mockstore;
pub mod moto;
pub mod pg;
pub mod pki;
pub mod procs;
pub mod server;
pub mod slashable;
pub mod wait;

use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data"))
}

pub fn interop_dir() -> PathBuf {
    data_dir().join("test-keys/interop")
}

/// The 8 interop keystores in a folder of their own (the interop folder also holds keys.json).
pub fn interop_keystores() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("keystores");
    std::fs::create_dir(&ks).unwrap();
    for i in 0..8 {
        std::fs::copy(
            interop_dir().join(format!("keystore-{i}.json")),
            ks.join(format!("keystore-{i}.json")),
        )
        .unwrap();
    }
    let pw = dir.path().join("password.txt");
    std::fs::copy(interop_dir().join("password.txt"), &pw).unwrap();
    (dir, ks, pw)
}

/// Interop secret keys 0..7 (public test keys), `0x`-prefixed hex.
pub fn interop_secret_keys() -> Vec<String> {
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(interop_dir().join("keys.json")).unwrap()).unwrap();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["secret_key"].as_str().unwrap().to_string())
        .collect()
}

/// Interop pubkeys 0..7.
pub fn interop_pubkeys() -> Vec<String> {
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(interop_dir().join("keys.json")).unwrap()).unwrap();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["pubkey"].as_str().unwrap().to_string())
        .collect()
}

/// Database options for tests that drive the protection library directly: the product's
/// defaults, but with room for a loaded test machine. The 1.5 s a signing may take in
/// production is there so a client can try another replica; a test that is not about that
/// limit must not fail because a 2-core machine stalled one commit.
pub fn db_options() -> palisade::protection::DbOptions {
    palisade::protection::DbOptions {
        timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    }
}
