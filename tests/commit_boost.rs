//! The Commit-Boost signer API against the real binary: every route's shape (current
//! Commit-Boost v0.11 and Web3Signer's), signatures checked with blst and libsecp256k1 over
//! roots this file computes from the specification with SHA-256 alone, module tokens refused
//! when they should be, proxy keys kept across a restart and shared by replicas on
//! PostgreSQL, and no signature from these routes that verifies as a consensus message.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::http::{client, key_args, metrics_text};
use testkit::server::Palisade;

const SIGNING_ID_A: &str = "0x6a33a23ef26a4836979edff86c493a69b26ccf0b4a16491a815a13787657431b";
const SIGNING_ID_B: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";
const SECRET_A: &str = "module-a-secret-0123456789";
const SECRET_B: &str = "module-b-secret-0123456789";
const SECRET_OLD: &str = "module-old-secret-0123456789";
const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

/// Commit-Boost's domain on mainnet: "mmoC" and the fork data root of the genesis fork
/// version with a zero genesis validators root.
fn domain() -> [u8; 32] {
    let fork_data = h(&[&[0u8; 32], &[0u8; 32]]); // version 0x00000000 padded, zero root
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(b"mmoC");
    d[4..].copy_from_slice(&fork_data[..28]);
    d
}

fn pad(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..b.len()].copy_from_slice(b);
    out
}

/// `hash_tree_root(PropCommitSigningInfo{data, module_signing_id, nonce, chain_id})` signed
/// under the domain.
fn module_root(object_root: &[u8], signing_id: &str, nonce: u64, chain_id: u64) -> [u8; 32] {
    let info = h(&[
        &h(&[object_root, &unhex(signing_id)]),
        &h(&[&pad(&nonce.to_le_bytes()), &pad(&chain_id.to_le_bytes())]),
    ]);
    h(&[&info, &domain()])
}

/// A 48-byte vector's root: two chunks.
fn root48(b: &[u8]) -> [u8; 32] {
    h(&[&b[..32], &pad(&b[32..])])
}

fn bls_verifies(pubkey: &str, root: &[u8; 32], sig: &str) -> bool {
    let pk = blst::min_pk::PublicKey::from_bytes(&unhex(pubkey)).unwrap();
    let Ok(sig) = blst::min_pk::Signature::from_bytes(&unhex(sig)) else {
        return false;
    };
    sig.verify(true, root, DST, &[], &pk, true) == blst::BLST_ERROR::BLST_SUCCESS
}

/// The address a 65-byte `r || s || v` signature of `root` recovers to (libsecp256k1).
fn recovered_address(root: &[u8; 32], sig: &str) -> (String, secp256k1::PublicKey) {
    let b = unhex(sig);
    assert_eq!(b.len(), 65, "{sig}");
    assert!(b[64] == 27 || b[64] == 28, "v is {}", b[64]);
    let id = secp256k1::ecdsa::RecoveryId::try_from(i32::from(b[64] - 27)).unwrap();
    let rs = secp256k1::ecdsa::RecoverableSignature::from_compact(&b[..64], id).unwrap();
    let pk = secp256k1::Secp256k1::new()
        .recover_ecdsa(secp256k1::Message::from_digest(*root), &rs)
        .unwrap();
    let hash = sha3::Keccak256::digest(&pk.serialize_uncompressed()[1..]);
    (format!("0x{}", hex::encode(&hash[12..])), pk)
}

/// Modules A (current Commit-Boost, keys 0..=6), B (current, `b_key` only) and W3S (Web3Signer's
/// API, key 7 alone: such a module may share no key).
fn modules_file(dir: &std::path::Path, b_key: &str) -> std::path::PathBuf {
    let keys = testkit::interop_pubkeys();
    let a_keys = serde_json::to_string(&keys[..7]).unwrap();
    let w3s_key = &keys[7];
    let secret_file = dir.join("a.jwt");
    palisade::fsutil::write_private(&secret_file, SECRET_A.as_bytes(), palisade::fsutil::Existing::Replace).unwrap();
    let path = dir.join("modules.yaml");
    std::fs::write(
        &path,
        format!(
            "modules:
  - id: A
    signing_id: \"{SIGNING_ID_A}\"
    jwt_secret_file: a.jwt
    consensus_keys: {a_keys}
  - id: B
    signing_id: \"{SIGNING_ID_B}\"
    jwt_secret: {SECRET_B}
    consensus_keys: [\"{b_key}\"]
  - id: W3S
    signing_id: \"0x2222222222222222222222222222222222222222222222222222222222222222\"
    jwt_secret: {SECRET_OLD}
    consensus_keys: [\"{w3s_key}\"]
    api: web3signer
"
        ),
    )
    .unwrap();
    path
}

/// A module's JWT as Commit-Boost makes it (`create_jwt`): HS256, `exp`, module, route and the
/// body's keccak256.
fn jwt(secret: &str, module: &str, route: &str, body: Option<&str>, exp_in: i64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + exp_in;
    let mut claims = json!({"exp": exp, "module": module, "route": route});
    if let Some(b) = body {
        claims["payload_hash"] = json!(format!("0x{}", hex::encode(sha3::Keccak256::digest(b.as_bytes()))));
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

struct Module<'a> {
    id: &'a str,
    secret: &'a str,
}

const A: Module = Module {
    id: "A",
    secret: SECRET_A,
};
const B: Module = Module {
    id: "B",
    secret: SECRET_B,
};
const W3S: Module = Module {
    id: "W3S",
    secret: SECRET_OLD,
};

async fn call(p: &Palisade, m: &Module<'_>, route: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let token = jwt(m.secret, m.id, route, body.as_deref(), 300);
    call_with(p, route, body, Some(token)).await
}

async fn call_with(p: &Palisade, route: &str, body: Option<String>, token: Option<String>) -> (u16, Value) {
    let mut req = match &body {
        Some(b) => client()
            .post(p.url(route))
            .header("content-type", "application/json")
            .body(b.clone()),
        None => client().get(p.url(route)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A proxy key made for `m`: the answer of `generate_proxy_key`, which must be 200.
async fn generate(p: &Palisade, m: &Module<'_>, delegator: &str, scheme: &str) -> Value {
    let body = json!({"pubkey": delegator, "scheme": scheme});
    let (s, v) = call(p, m, "/signer/v1/generate_proxy_key", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The `get_pubkeys` entry of `consensus`.
fn entry_of(v: &Value, consensus: &str) -> Value {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["consensus"] == consensus)
        .unwrap_or_else(|| panic!("{consensus} not listed: {v}"))
        .clone()
}

fn serve_args<'a>(
    ks: &'a std::path::Path,
    pw: &'a std::path::Path,
    modules: &'a str,
    proxy_pw: &'a str,
) -> Vec<&'a str> {
    let mut args = key_args(ks, pw);
    args.extend([
        "--network",
        "mainnet",
        "--commit-boost-api-enabled",
        "--commit-boost-modules-file",
        modules,
        "--proxy-keystores-password-file",
        proxy_pw,
    ]);
    args
}

const OBJECT_ROOT: &str = "0x0123456789012345678901234567890123456789012345678901234567890123";

#[tokio::test]
async fn every_route_answers_as_commit_boost_and_web3signer_do() {
    let (_keys, ks, pw) = testkit::interop_keystores();
    let pubkeys = testkit::interop_pubkeys();
    let (k0, k1) = (pubkeys[0].as_str(), pubkeys[1].as_str());
    let work = tempfile::tempdir().unwrap();
    let modules = modules_file(work.path(), k1);
    let proxy_pw = work.path().join("proxy-password.txt");
    palisade::fsutil::write_private(&proxy_pw, b"proxy-pass\n", palisade::fsutil::Existing::Replace).unwrap();
    let args = serve_args(&ks, &pw, modules.to_str().unwrap(), proxy_pw.to_str().unwrap());
    let p = Palisade::serve_in(work.path(), &args);
    testkit::http::keys_loaded(&p).await;

    // get_pubkeys: every key module A may use, no proxies yet; B sees only its one key.
    let (s, v) = call(&p, &A, "/signer/v1/get_pubkeys", None).await;
    assert_eq!(s, 200, "{v}");
    let listed: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["consensus"].as_str().unwrap())
        .collect();
    let listed: std::collections::BTreeSet<&str> = listed.into_iter().collect();
    assert_eq!(listed, pubkeys[..7].iter().map(String::as_str).collect(), "{v}");
    assert!(v["keys"][0]["proxy_bls"].as_array().unwrap().is_empty());
    let (s, v) = call(&p, &B, "/signer/v1/get_pubkeys", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["keys"][0]["consensus"], k1);

    // generate_proxy_key: the delegation verifies with the consensus key over the root of
    // ProxyDelegation{delegator, proxy} under Commit-Boost's domain.
    let bls = generate(&p, &A, k0, "bls").await;
    assert_eq!(bls["message"]["delegator"], k0);
    let bls_proxy = bls["message"]["proxy"].as_str().unwrap().to_string();
    let root = h(&[&h(&[&root48(&unhex(k0)), &root48(&unhex(&bls_proxy))]), &domain()]);
    assert!(
        bls_verifies(k0, &root, bls["signature"].as_str().unwrap()),
        "BLS delegation: {bls}"
    );
    let ecdsa = generate(&p, &A, k0, "ecdsa").await;
    let address = ecdsa["message"]["proxy"].as_str().unwrap().to_string();
    assert_eq!(unhex(&address).len(), 20, "{ecdsa}");
    let root = h(&[&h(&[&root48(&unhex(k0)), &pad(&unhex(&address))]), &domain()]);
    assert!(
        bls_verifies(k0, &root, ecdsa["signature"].as_str().unwrap()),
        "ECDSA delegation: {ecdsa}"
    );

    // The proxies are A's: listed for A, not for B (B may not use k0 at all).
    let (_, v) = call(&p, &A, "/signer/v1/get_pubkeys", None).await;
    let entry = entry_of(&v, k0);
    assert_eq!(entry["proxy_bls"], json!([bls_proxy]));
    assert_eq!(entry["proxy_ecdsa"], json!([address]));

    // Current routes: the root bound to module A's signing id, the nonce and chain id 1.
    let expected = module_root(&unhex(OBJECT_ROOT), SIGNING_ID_A, 7, 1);
    let (s, v) = call(
        &p,
        &A,
        "/signer/v1/request_signature/bls",
        Some(json!({"pubkey": k0, "object_root": OBJECT_ROOT, "nonce": 7})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            &v["pubkey"],
            &v["object_root"],
            &v["module_signing_id"],
            &v["nonce"],
            &v["chain_id"]
        ),
        (
            &json!(k0),
            &json!(OBJECT_ROOT),
            &json!(SIGNING_ID_A),
            &json!(7),
            &json!("0x1")
        )
    );
    assert!(bls_verifies(k0, &expected, v["signature"].as_str().unwrap()), "{v}");
    let (s, v) = call(
        &p,
        &A,
        "/signer/v1/request_signature/proxy-bls",
        Some(json!({"proxy": bls_proxy, "object_root": OBJECT_ROOT, "nonce": 7})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pubkey"], json!(bls_proxy));
    assert!(
        bls_verifies(&bls_proxy, &expected, v["signature"].as_str().unwrap()),
        "{v}"
    );
    let (s, v) = call(
        &p,
        &A,
        "/signer/v1/request_signature/proxy-ecdsa",
        Some(json!({"proxy": address, "object_root": OBJECT_ROOT, "nonce": 7})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["address"], json!(address));
    let (recovered, ecdsa_pk) = recovered_address(&expected, v["signature"].as_str().unwrap());
    assert_eq!(recovered, address, "the ECDSA signature recovers to another address");

    // Web3Signer's API, for a module declared so (alone on its key 7): get_pubkeys and the
    // delegation name an ECDSA proxy by its compressed key, and the object root is signed as it
    // is; secp256k1 as r || s over its SHA-256.
    let k7 = pubkeys[7].as_str();
    let w3s_bls = generate(&p, &W3S, k7, "bls").await;
    let w3s_bls_proxy = w3s_bls["message"]["proxy"].as_str().unwrap().to_string();
    let w3s_ecdsa = generate(&p, &W3S, k7, "ecdsa").await;
    let compressed = w3s_ecdsa["message"]["proxy"].as_str().unwrap().to_string();
    let c = unhex(&compressed);
    assert_eq!(c.len(), 33, "{w3s_ecdsa}");
    let root = h(&[&h(&[&root48(&unhex(k7)), &h(&[&c[..32], &pad(&c[32..])])]), &domain()]);
    assert!(
        bls_verifies(k7, &root, w3s_ecdsa["signature"].as_str().unwrap()),
        "Web3Signer ECDSA delegation: {w3s_ecdsa}"
    );
    let (_, v) = call(&p, &W3S, "/signer/v1/get_pubkeys", None).await;
    assert_eq!(
        v,
        json!({"keys": [{"consensus": k7, "proxy_bls": [w3s_bls_proxy], "proxy_ecdsa": [compressed]}]})
    );
    let legacy = h(&[&unhex(OBJECT_ROOT), &domain()]);
    for (kind, key) in [("consensus", k7), ("proxy_bls", w3s_bls_proxy.as_str())] {
        let (s, v) = call(
            &p,
            &W3S,
            "/signer/v1/request_signature",
            Some(json!({"type": kind, "pubkey": key, "object_root": OBJECT_ROOT})),
        )
        .await;
        assert_eq!(s, 200, "{kind}: {v}");
        assert!(bls_verifies(key, &legacy, v.as_str().unwrap()), "{kind}: {v}");
    }
    // Commit-Boost before v0.8 sent the module's secret itself as the bearer.
    let body = json!({"type": "proxy_ecdsa", "pubkey": compressed, "object_root": OBJECT_ROOT}).to_string();
    let (s, v) = call_with(&p, "/signer/v1/request_signature", Some(body), Some(SECRET_OLD.into())).await;
    assert_eq!(s, 200, "{v}");
    let w3s_pk = secp256k1::PublicKey::from_slice(&c).unwrap();
    let sig = secp256k1::ecdsa::Signature::from_compact(&unhex(v.as_str().unwrap())).unwrap();
    secp256k1::Secp256k1::verification_only()
        .verify_ecdsa(secp256k1::Message::from_digest(h(&[&legacy])), &sig, &w3s_pk)
        .expect("Web3Signer-style ECDSA signature verifies over sha256(signing root)");
    assert!(ecdsa_pk != w3s_pk);
    // That route signs any root a module chooses: module A there could have B's commitments or
    // a delegation signed. Refused, as the current routes are to W3S.
    let forged = module_root(&unhex(OBJECT_ROOT), SIGNING_ID_B, 1, 1);
    let body = json!({"type": "consensus", "pubkey": k1, "object_root": format!("0x{}", hex::encode(forged))});
    let (s, v) = call(&p, &A, "/signer/v1/request_signature", Some(body)).await;
    assert_eq!(s, 403, "{v}");
    let body = json!({"pubkey": k7, "object_root": OBJECT_ROOT, "nonce": 1});
    let (s, v) = call(&p, &W3S, "/signer/v1/request_signature/bls", Some(body)).await;
    assert_eq!(s, 403, "{v}");

    // A module keeps to its keys and its proxies.
    let body = json!({"pubkey": k0, "object_root": OBJECT_ROOT, "nonce": 1});
    let (s, v) = call(&p, &B, "/signer/v1/request_signature/bls", Some(body)).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        &p,
        &B,
        "/signer/v1/generate_proxy_key",
        Some(json!({"pubkey": k0, "scheme": "bls"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    // Another module's proxy is unknown to B (not even its existence is told).
    let body = json!({"proxy": bls_proxy, "object_root": OBJECT_ROOT, "nonce": 1});
    let (s, v) = call(&p, &B, "/signer/v1/request_signature/proxy-bls", Some(body)).await;
    assert_eq!(s, 404, "{v}");
    let body = json!({"proxy": address, "object_root": OBJECT_ROOT, "nonce": 1});
    let (s, v) = call(&p, &B, "/signer/v1/request_signature/proxy-ecdsa", Some(body)).await;
    assert_eq!(s, 404, "{v}");
    let other = &pubkeys[2];
    let body = json!({"proxy": other, "object_root": OBJECT_ROOT, "nonce": 1});
    let (s, v) = call(&p, &A, "/signer/v1/request_signature/proxy-bls", Some(body)).await;
    assert_eq!(s, 404, "a consensus key is no proxy: {v}");
    let (s, v) = call(
        &p,
        &A,
        "/signer/v1/request_signature/bls",
        Some(json!({"pubkey": k0, "object_root": "0x12", "nonce": 1})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("object_root"), "{v}");

    // Tokens: each refusal is a 401 with a reason; nothing is signed.
    let route = "/signer/v1/request_signature/bls";
    let body = json!({"pubkey": k0, "object_root": OBJECT_ROOT, "nonce": 9}).to_string();
    let cases = [
        ("no token", None),
        ("expired", Some(jwt(SECRET_A, "A", route, Some(&body), -60))),
        (
            "another route",
            Some(jwt(
                SECRET_A,
                "A",
                "/signer/v1/request_signature/proxy-bls",
                Some(&body),
                300,
            )),
        ),
        ("unknown module", Some(jwt(SECRET_A, "Z", route, Some(&body), 300))),
        (
            "another module's secret",
            Some(jwt(SECRET_B, "A", route, Some(&body), 300)),
        ),
        ("another body", Some(jwt(SECRET_A, "A", route, Some("{}"), 300))),
        ("no payload hash", Some(jwt(SECRET_A, "A", route, None, 300))),
        ("a module's secret as token", Some(SECRET_A.to_string())),
    ];
    for (what, token) in cases {
        let (s, v) = call_with(&p, route, Some(body.clone()), token).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    // A current module's secret is never a token by itself.
    let (s, _) = call_with(&p, "/signer/v1/get_pubkeys", None, Some(SECRET_A.into())).await;
    assert_eq!(s, 401, "module A's secret was taken as a token");

    // Per-module metrics and a log line per refusal that names the module.
    let metrics = metrics_text(&p).await;
    assert!(
        metrics.contains(
            r#"palisade_commit_boost_requests_total{module="A",route="request_signature_bls",outcome="signed"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"palisade_commit_boost_requests_total{module="B",route="request_signature_bls",outcome="forbidden"} 1"#
        ),
        "{metrics}"
    );
    assert!(p.log().contains("Commit-Boost request refused"), "{}", p.log());
    for secret in [SECRET_A, SECRET_B, SECRET_OLD, "proxy-pass"] {
        assert!(!p.log().contains(secret), "a secret reached the log");
    }

    // Files: Web3Signer's layout with a module folder, mode 0600, and they come back.
    let folder = work.path().join("proxy-keystores").join(k0).join("BLS").join("A");
    let file = folder.join(format!("{bls_proxy}.json"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    drop(p);
    let p = Palisade::serve_in(work.path(), &args);
    testkit::http::keys_loaded(&p).await;
    let (_, v) = call(&p, &A, "/signer/v1/get_pubkeys", None).await;
    let entry = entry_of(&v, k0);
    assert_eq!(
        (entry["proxy_bls"].clone(), entry["proxy_ecdsa"].clone()),
        (json!([bls_proxy]), json!([address]))
    );
    let (s, v) = call(
        &p,
        &A,
        "/signer/v1/request_signature/proxy-ecdsa",
        Some(json!({"proxy": address, "object_root": OBJECT_ROOT, "nonce": 7})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        recovered_address(&expected, v["signature"].as_str().unwrap()).0,
        address
    );
}

/// Whatever root a module supplies, on any route, the answer never verifies as a consensus
/// message: for every recorded request of every type (block, attestation, randao, exit,
/// aggregate, sync committee, registration, deposit, ...) the module asks for its signing root
/// to be signed, and the signature is checked against that root.
#[tokio::test]
async fn no_commit_boost_signature_is_a_consensus_signature() {
    let (_keys, ks, pw) = testkit::interop_keystores();
    let vectors = std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl")).unwrap();
    let all = serde_json::to_string(&testkit::interop_pubkeys()).unwrap();
    // Each API form in turn, by a module allowed every key: current Commit-Boost, then Web3Signer's.
    for (api, route) in [
        ("commit-boost", "/signer/v1/request_signature/bls"),
        ("web3signer", "/signer/v1/request_signature"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let modules = work.path().join("modules.yaml");
        std::fs::write(
            &modules,
            format!("modules:\n  - id: A\n    signing_id: \"{SIGNING_ID_A}\"\n    jwt_secret: {SECRET_A}\n    consensus_keys: {all}\n    api: {api}\n"),
        )
        .unwrap();
        let proxy_pw = work.path().join("proxy-password.txt");
        palisade::fsutil::write_private(&proxy_pw, b"proxy-pass", palisade::fsutil::Existing::Replace).unwrap();
        let args = serve_args(&ks, &pw, modules.to_str().unwrap(), proxy_pw.to_str().unwrap());
        let p = Palisade::serve_in(work.path(), &args);
        testkit::http::keys_loaded(&p).await;
        let mut types = std::collections::BTreeSet::new();
        for line in vectors.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let (pk, root, consensus_sig) = (
                v["pubkey"].as_str().unwrap(),
                v["signing_root"].as_str().unwrap(),
                v["signature"].as_str().unwrap(),
            );
            let root32: [u8; 32] = unhex(root).try_into().unwrap();
            assert!(
                bls_verifies(pk, &root32, consensus_sig),
                "the vector itself: {}",
                v["name"]
            );
            types.insert(v["request"]["type"].as_str().unwrap().to_string());
            let body = match api {
                "commit-boost" => json!({"pubkey": pk, "object_root": root, "nonce": 0}),
                _ => json!({"type": "consensus", "pubkey": pk, "object_root": root}),
            };
            let (s, got) = call(&p, &A, route, Some(body)).await;
            assert_eq!(s, 200, "{route}: {got}");
            let sig = got["signature"].as_str().or(got.as_str()).unwrap();
            assert_ne!(
                sig, consensus_sig,
                "{}: {route} returned the consensus signature",
                v["name"]
            );
            assert!(
                !bls_verifies(pk, &root32, sig),
                "{}: {route} signed the consensus signing root",
                v["name"]
            );
        }
        let every: std::collections::BTreeSet<String> = [
            "AGGREGATE_AND_PROOF",
            "AGGREGATE_AND_PROOF_V2",
            "AGGREGATION_SLOT",
            "ATTESTATION",
            "BLOCK",
            "BLOCK_V2",
            "DEPOSIT",
            "RANDAO_REVEAL",
            "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
            "SYNC_COMMITTEE_MESSAGE",
            "SYNC_COMMITTEE_SELECTION_PROOF",
            "VALIDATOR_REGISTRATION",
            "VOLUNTARY_EXIT",
        ]
        .map(String::from)
        .into();
        assert_eq!(types, every, "not every consensus type was tried");
    }
}

/// A proxy made on one replica signs on another (PostgreSQL), and both list it.
#[tokio::test]
async fn proxy_keys_are_shared_by_replicas_on_postgres() {
    let url = testkit::pg::shared().new_database();
    let (_keys, ks, pw) = testkit::interop_keystores();
    let pubkeys = testkit::interop_pubkeys();
    let k0 = pubkeys[0].as_str();
    let work = tempfile::tempdir().unwrap();
    let modules = modules_file(work.path(), &pubkeys[1]);
    let proxy_pw = work.path().join("proxy-password.txt");
    palisade::fsutil::write_private(&proxy_pw, b"fleet-proxy-pass", palisade::fsutil::Existing::Replace).unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut args = serve_args(&ks, &pw, modules.to_str().unwrap(), proxy_pw.to_str().unwrap());
    args.extend(["--database-url", &url]);
    let a = Palisade::serve_in(a_dir.path(), &args);
    let b = Palisade::serve_in(b_dir.path(), &args);
    testkit::http::keys_loaded(&a).await;
    testkit::http::keys_loaded(&b).await;
    let made = generate(&a, &A, k0, "ecdsa").await;
    let address = made["message"]["proxy"].as_str().unwrap();
    // Replica B never saw the request: it signs with the proxy from the shared database (reread
    // at most once a second, so within about a second).
    let v = testkit::wait::until(
        "replica B signs with the proxy A made",
        std::time::Duration::from_secs(20),
        || async {
            let body = json!({"proxy": address, "object_root": OBJECT_ROOT, "nonce": 3});
            let (s, v) = call(&b, &A, "/signer/v1/request_signature/proxy-ecdsa", Some(body)).await;
            match s {
                200 => Some(v),
                404 => None,
                _ => panic!("{s}: {v}"),
            }
        },
    )
    .await;
    let expected = module_root(&unhex(OBJECT_ROOT), SIGNING_ID_A, 3, 1);
    assert_eq!(
        recovered_address(&expected, v["signature"].as_str().unwrap()).0,
        address
    );
    let (_, v) = call(&b, &A, "/signer/v1/get_pubkeys", None).await;
    let entry = entry_of(&v, k0);
    assert_eq!(entry["proxy_ecdsa"], json!([address]), "{v}");
    assert!(
        !b_dir.path().join("proxy-keystores").join(k0).exists(),
        "replica B wrote the key it only read"
    );
}

#[test]
fn a_bad_setup_is_refused_by_name() {
    let (_keys, ks, pw) = testkit::interop_keystores();
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("modules.yaml");
    std::fs::write(
        &bad,
        "modules:\n  - id: A\n    signing_id: \"0x00\"\n    jwt_secret: x\n    consensus_keys: all\n",
    )
    .unwrap();
    let proxy_pw = work.path().join("pw.txt");
    palisade::fsutil::write_private(&proxy_pw, b"p", palisade::fsutil::Existing::Replace).unwrap();
    let mut args = vec!["serve", "--network", "mainnet"];
    args.extend(key_args(&ks, &pw));
    args.push("--commit-boost-api-enabled");
    let (ok, _, err) = testkit::server::run(&args, work.path());
    assert!(!ok && err.contains("--commit-boost-modules-file"), "{err}");
    args.extend([
        "--commit-boost-modules-file",
        bad.to_str().unwrap(),
        "--proxy-keystores-password-file",
        proxy_pw.to_str().unwrap(),
    ]);
    let (ok, _, err) = testkit::server::run(&args, work.path());
    assert!(
        !ok && err.contains("modules.yaml") && err.contains("signing_id"),
        "{err}"
    );
}

/// A Web3Signer proxy folder loads as it is: an EIP-2335 keystore under `BLS/` and a Web3 Secret
/// Storage file under `SECP256K1/` (the specifications' own test vectors, file names as
/// Web3Signer's tests write them), usable by a module allowed their consensus key. Web3Signer
/// reads its password file with the final newline; Palisade accepts either.
#[tokio::test]
async fn a_web3signer_proxy_folder_loads_as_it_is() {
    const V3: &str = r#"{"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"6087dab2f9fdbbfaddc31a909735c1e6"},
        "ciphertext":"5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46","kdf":"pbkdf2",
        "kdfparams":{"c":262144,"dklen":32,"prf":"hmac-sha256","salt":"ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},
        "mac":"517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},
        "id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}"#;
    let secp = secp256k1::Secp256k1::new();
    let secret: [u8; 32] = unhex("7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d")
        .try_into()
        .unwrap();
    let sk = secp256k1::SecretKey::from_byte_array(secret).unwrap();
    let public = secp256k1::PublicKey::from_secret_key(&secp, &sk);
    let address = format!(
        "0x{}",
        hex::encode(&sha3::Keccak256::digest(&public.serialize_uncompressed()[1..])[12..])
    );
    let eip2335 = testkit::data_dir().join("test-keys/eip2335-vectors");
    let bls_vector: Value =
        serde_json::from_str(&std::fs::read_to_string(eip2335.join("pbkdf2.json")).unwrap()).unwrap();
    let bls_proxy = format!("0x{}", bls_vector["pubkey"].as_str().unwrap());

    let (_keys, ks, pw) = testkit::interop_keystores();
    let pubkeys = testkit::interop_pubkeys();
    let k7 = pubkeys[7].as_str();
    for (folder, file, keystore, password) in [
        (
            "SECP256K1",
            "UTC--2024-10-01T00-00-00.000000000Z--proxy.json".to_string(),
            V3.to_string(),
            b"testpassword\n".to_vec(),
        ),
        (
            "BLS",
            format!("{bls_proxy}.json"),
            std::fs::read_to_string(eip2335.join("pbkdf2.json")).unwrap(),
            std::fs::read(eip2335.join("password.txt")).unwrap(),
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("w3s-proxies").join(k7).join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), keystore).unwrap();
        let modules = modules_file(work.path(), &pubkeys[1]);
        let proxy_pw = work.path().join("proxy-password.txt");
        palisade::fsutil::write_private(&proxy_pw, &password, palisade::fsutil::Existing::Replace).unwrap();
        let mut args = serve_args(&ks, &pw, modules.to_str().unwrap(), proxy_pw.to_str().unwrap());
        let proxies = work.path().join("w3s-proxies");
        args.extend(["--proxy-keystores-path", proxies.to_str().unwrap()]);
        let p = Palisade::serve_in(work.path(), &args);
        testkit::http::keys_loaded(&p).await;
        let (s, v) = call(&p, &W3S, "/signer/v1/get_pubkeys", None).await;
        assert_eq!(s, 200, "{v}");
        let entry = entry_of(&v, k7);
        let legacy = h(&[&unhex(OBJECT_ROOT), &domain()]);
        if folder == "BLS" {
            assert_eq!(entry["proxy_bls"], json!([bls_proxy]), "{v}");
            let body = json!({"type": "proxy_bls", "pubkey": bls_proxy, "object_root": OBJECT_ROOT});
            let (s, v) = call(&p, &W3S, "/signer/v1/request_signature", Some(body)).await;
            assert_eq!(s, 200, "{v}");
            assert!(bls_verifies(&bls_proxy, &legacy, v.as_str().unwrap()), "{v}");
        } else {
            let compressed = format!("0x{}", hex::encode(public.serialize()));
            assert_eq!(entry["proxy_ecdsa"], json!([compressed]), "{v}");
            let body = json!({"type": "proxy_ecdsa", "pubkey": compressed, "object_root": OBJECT_ROOT});
            let (s, v) = call(&p, &W3S, "/signer/v1/request_signature", Some(body)).await;
            assert_eq!(s, 200, "{v}");
            let sig = secp256k1::ecdsa::Signature::from_compact(&unhex(v.as_str().unwrap())).unwrap();
            secp.verify_ecdsa(secp256k1::Message::from_digest(h(&[&legacy])), &sig, &public)
                .expect("the loaded secp256k1 key signs");
        }
        // Module A may not use key 7: it sees neither the key nor its proxies, and may not sign
        // with them.
        let (_, v) = call(&p, &A, "/signer/v1/get_pubkeys", None).await;
        assert!(!v.to_string().contains(&k7[2..]), "{v}");
        let proxy = if folder == "BLS" {
            ("proxy-bls", bls_proxy.clone())
        } else {
            ("proxy-ecdsa", address.clone())
        };
        let body = json!({"proxy": proxy.1, "object_root": OBJECT_ROOT, "nonce": 1});
        let (s, v) = call(&p, &A, &format!("/signer/v1/request_signature/{}", proxy.0), Some(body)).await;
        assert_eq!(s, 404, "{v}");
    }
}
