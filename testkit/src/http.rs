//! HTTP helpers and request makers shared by the tests that drive the real binary.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::server::Palisade;

/// The Lodestar dev chain's genesis validators root (`tests/data/lodestar-dev-minimal.yaml`).
pub const MINIMAL_GVR: &str = "0x270d43e74ce340de4bca2b1936beca0f4f5408d9e78aec4850920baf659d5b69";

/// The Lodestar dev chain's config (minimal preset, forks up to Capella at epoch 3).
pub fn minimal_network() -> String {
    super::data_dir()
        .join("lodestar-dev-minimal.yaml")
        .display()
        .to_string()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The status and the body (JSON if it parses, else a string).
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// POST with `Content-Type: application/json`.
pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    answer(
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

pub async fn get(url: &str) -> (u16, Value) {
    answer(client().get(url).send().await.unwrap()).await
}

/// The public keys the signer lists (`/api/v1/eth2/publicKeys`).
pub async fn public_keys(p: &Palisade) -> Vec<String> {
    let (_, keys) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    keys.as_array()
        .expect("a list of public keys")
        .iter()
        .map(|k| k.as_str().expect("a public key").to_string())
        .collect()
}

/// The signer's Prometheus metrics, as text.
pub async fn metrics_text(p: &Palisade) -> String {
    client()
        .get(p.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET an admin endpoint with the signer's token; the JSON answer.
pub async fn admin_get(p: &Palisade, path: &str) -> Value {
    let r = client().get(p.url(path)).bearer_auth(p.token()).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json::<Value>().await.unwrap()
}

/// `/healthcheck` with the token (every failure named), whatever its status.
pub async fn health(p: &Palisade) -> Value {
    let r = client()
        .get(p.url("/healthcheck"))
        .bearer_auth(p.token())
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()
}

/// An admin request with the signer's token and a JSON body.
pub async fn admin(p: &Palisade, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    answer(
        client()
            .request(method, p.url(path))
            .bearer_auth(p.token())
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Waits until no key is still being decrypted; returns the keys check of /healthcheck.
pub async fn keys_loaded(p: &Palisade) -> Value {
    let keys = super::wait::within("keys decrypted", Duration::from_secs(60), || async {
        let (_, health) = get(&p.url("/healthcheck")).await;
        (health["checks"][1]["data"]["loading"] == 0).then(|| health["checks"][1]["data"].clone())
    })
    .await;
    keys.unwrap_or_else(|| panic!("keys still loading after 60 s:\n{}", p.log()))
}

pub fn sign_url(p: &Palisade, pubkey: &str) -> String {
    p.url(&format!("/api/v1/eth2/sign/{pubkey}"))
}

pub fn key_args<'a>(ks: &'a Path, pw: &'a Path) -> Vec<&'a str> {
    vec![
        "--keystores-path",
        ks.to_str().unwrap(),
        "--keystores-password-file",
        pw.to_str().unwrap(),
    ]
}

/// A signer with the 8 interop keys on the Lodestar dev chain's config, plus `extra` options.
/// The guard keeps the keystores alive.
pub fn signer_with_interop_keys(extra: &[&str]) -> (tempfile::TempDir, Palisade) {
    let (dir, ks, pw) = super::interop_keystores();
    let net = minimal_network();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net]);
    args.extend(extra);
    let p = Palisade::serve(&args);
    (dir, p)
}

fn minimal_fork_info(gvr: &str) -> Value {
    json!({"fork": {"previous_version": "0x00000001", "current_version": "0x00000001", "epoch": "0"},
           "genesis_validators_root": gvr})
}

/// An ATTESTATION on the minimal dev chain.
pub fn attestation(source: u64, target: u64, block_root_byte: u8, gvr: &str) -> Value {
    json!({
        "type": "ATTESTATION",
        "fork_info": minimal_fork_info(gvr),
        "attestation": {"slot": (target * 8).to_string(), "index": "0",
            "beacon_block_root": format!("0x{}", hex::encode([block_root_byte; 32])),
            "source": {"epoch": source.to_string(), "root": format!("0x{}", "00".repeat(32))},
            "target": {"epoch": target.to_string(), "root": format!("0x{}", "11".repeat(32))}}
    })
}

/// A BLOCK_V2 header on the minimal dev chain (Capella from slot 24).
pub fn block_header(slot: u64, state_root_byte: u8, gvr: &str) -> Value {
    json!({
        "type": "BLOCK_V2",
        "fork_info": minimal_fork_info(gvr),
        "beacon_block": {"version": "CAPELLA", "block_header": {
            "slot": slot.to_string(), "proposer_index": "1",
            "parent_root": format!("0x{}", "22".repeat(32)),
            "state_root": format!("0x{}", hex::encode([state_root_byte; 32])),
            "body_root": format!("0x{}", "33".repeat(32))}}
    })
}

pub fn randao(epoch: u64, gvr: &str) -> Value {
    json!({
        "type": "RANDAO_REVEAL",
        "fork_info": minimal_fork_info(gvr),
        "randao_reveal": {"epoch": epoch.to_string()}
    })
}

/// A VALIDATOR_REGISTRATION as Nimbus sends it: `fork_info` with a zero root.
pub fn registration_nimbus(pubkey: &str) -> Value {
    json!({
        "type": "VALIDATOR_REGISTRATION",
        "fork_info": minimal_fork_info(&format!("0x{}", "00".repeat(32))),
        "validator_registration": {"fee_recipient": format!("0x{}", "ab".repeat(20)), "gas_limit": "30000000",
                                   "timestamp": "1700000000", "pubkey": pubkey}
    })
}
