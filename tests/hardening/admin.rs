//! Escape hatches over HTTP: a repair may raise watermarks but never discard what was
//! signed (that is for the host's own CLI), and a body must be a JSON object, not an array
//! that a lenient parser reads as one.

use reqwest::Method;
use serde_json::json;
use testkit::http::{MINIMAL_GVR, attestation, sign_url};

#[tokio::test]
async fn an_http_repair_cannot_discard_what_was_signed() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    testkit::http::keys_loaded(&p).await;
    let pk = testkit::interop_pubkeys()[5].clone();
    let url = sign_url(&p, &pk);
    assert_eq!(
        testkit::http::post(&url, attestation(1, 2, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );
    // With the admin token, as an attacker holding a leaked one would ask.
    let (s, v) = testkit::http::admin(
        &p,
        Method::POST,
        "/api/v1/eth2/slashing-protection/repair",
        &json!({"pubkeys": [pk], "attestation_source": "0", "attestation_target": "0", "block_slot": "0",
                "reason": "lower it", "confirm": true, "discard_past_messages": true}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v.to_string()
            .contains("slashing-protection repair --discard-past-messages"),
        "{v}"
    );
    // Nothing was discarded: a second attestation for the same target is still refused.
    let (s, v) = testkit::http::post(&url, attestation(1, 2, 2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "a double vote was signed after the repair: {v}");
}

#[tokio::test]
async fn a_json_array_is_not_a_request() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    testkit::http::keys_loaded(&p).await;
    let pk = testkit::interop_pubkeys()[6].clone();
    let url = sign_url(&p, &pk);
    let request = attestation(1, 2, 1, MINIMAL_GVR);
    // serde reads a struct from an array of its fields in order: the same values, as a list.
    let fields: Vec<serde_json::Value> = request.as_object().unwrap().values().cloned().collect();
    let (s, v) = testkit::http::post(&url, serde_json::Value::Array(fields).to_string()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("object"), "{v}");
    let (s, v) = testkit::http::admin(
        &p,
        Method::POST,
        "/api/v1/eth2/slashing-protection/repair",
        &json!([[pk], null, "0", "0", "array", true]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // The object itself is signed (nothing was recorded by the refused one).
    assert_eq!(testkit::http::post(&url, request.to_string()).await.0, 200);
}
