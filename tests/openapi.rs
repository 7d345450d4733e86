//! `openapi.yaml` and the router must describe the same API.

mod common;

use std::collections::BTreeSet;

use common::server::Palisade;
use palisade::http::{Access, endpoint_table};
use serde_yaml_ng::Value;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// (METHOD, path, needs bearer token) for every operation in the spec.
fn spec_operations(spec: &Value) -> BTreeSet<(String, String, bool)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            let secured = op.get("security").is_some();
            ops.insert((method, path.as_str().unwrap().to_string(), secured));
        }
    }
    ops
}

#[test]
fn router_and_spec_describe_the_same_endpoints() {
    let from_router: BTreeSet<(String, String, bool)> = endpoint_table()
        .into_iter()
        .map(|e| (e.method.to_string(), e.path.to_string(), e.access == Access::Admin))
        .collect();
    let from_spec = spec_operations(&spec());
    let missing_in_spec: Vec<_> = from_router.difference(&from_spec).collect();
    let missing_in_router: Vec<_> = from_spec.difference(&from_router).collect();
    assert!(
        missing_in_spec.is_empty() && missing_in_router.is_empty(),
        "served but not in openapi.yaml: {missing_in_spec:?}\nin openapi.yaml but not served: {missing_in_router:?}"
    );
}

#[test]
fn sign_documents_every_status_it_returns() {
    let s = spec();
    let responses = &s["paths"]["/api/v1/eth2/sign/{identifier}"]["post"]["responses"];
    for code in ["200", "400", "404", "412", "413", "503"] {
        assert!(responses.get(code).is_some(), "sign: status {code} is not documented");
    }
}

/// Every documented operation is routed by the real server: none falls through to the
/// "no route" 404 or to 405, and every secured one answers 401 without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let p = Palisade::serve(&["--network", "minimal"]);
    let client = reqwest::Client::new();
    let pk = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    for (method, path, secured) in spec_operations(&spec()) {
        let url = p.url(&path.replace("{identifier}", pk));
        let r = client
            .request(method.parse().unwrap(), &url)
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            !(status == 404 && body.contains("no route")) && status != 405,
            "{method} {path}: not routed ({status} {body})"
        );
        if secured {
            assert_eq!(status, 401, "{method} {path} answered without a token: {body}");
        }
    }
}
