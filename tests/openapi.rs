//! `openapi.yaml` and the router must describe the same API.

use std::collections::BTreeSet;

use palisade::http::{Access, endpoint_table};
use serde_yaml_ng::Value;
use testkit::server::Palisade;

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
        .map(|e| {
            let secured = matches!(e.access, Access::Admin | Access::Module);
            (e.method.to_string(), e.path.to_string(), secured)
        })
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
    // The Commit-Boost routes answer (401 without a module's token) once enabled.
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules.yaml");
    std::fs::write(
        &modules,
        "modules:\n  - id: M\n    signing_id: \"0x0101010101010101010101010101010101010101010101010101010101010101\"\n    jwt_secret: a-module-secret-of-some-length\n    consensus_keys: all\n",
    )
    .unwrap();
    let proxy_pw = dir.path().join("proxy-pw.txt");
    palisade::fsutil::write_private(&proxy_pw, b"pw", palisade::fsutil::Existing::Replace).unwrap();
    let p = Palisade::serve(&[
        "--network",
        "minimal",
        "--commit-boost-api-enabled",
        "--commit-boost-modules-file",
        modules.to_str().unwrap(),
        "--proxy-keystores-password-file",
        proxy_pw.to_str().unwrap(),
    ]);
    let client = reqwest::Client::new();
    let pk = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    for (method, path, secured) in spec_operations(&spec()) {
        let url = p.url(&path.replace("{identifier}", pk));
        let r = client
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
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

/// Follows `$ref`s and `allOf` to the schema that holds `properties` or `items`.
fn resolve<'a>(spec: &'a Value, mut schema: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = schema.get("$ref").and_then(|r| r.as_str()) {
            let mut s = spec;
            for part in r.trim_start_matches("#/").split('/') {
                s = &s[part];
            }
            schema = s;
        } else if let Some(all) = schema.get("allOf") {
            schema = &all[0];
        } else {
            return schema;
        }
    }
}

/// Every field of `json` is a documented property of `schema`, at every depth.
fn documented(spec: &Value, schema: &Value, json: &serde_json::Value, path: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(|o| o.as_sequence()) {
        let errors: Vec<String> = alternatives
            .iter()
            .filter_map(|alt| documented(spec, alt, json, path).err())
            .collect();
        return if errors.len() < alternatives.len() {
            Ok(())
        } else {
            Err(errors.join("; "))
        };
    }
    match json {
        serde_json::Value::Object(fields) => {
            let props = schema
                .get("properties")
                .ok_or_else(|| format!("{path}: an object whose fields are not documented"))?;
            for (k, v) in fields {
                let p = props
                    .get(k.as_str())
                    .ok_or_else(|| format!("{path}.{k}: not documented"))?;
                documented(spec, p, v, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => {
            let item = schema
                .get("items")
                .ok_or_else(|| format!("{path}: array items not documented"))?;
            items
                .iter()
                .try_for_each(|i| documented(spec, item, i, &format!("{path}[]")))
        }
        _ => Ok(()),
    }
}

/// Every field of every recorded request (all 13 types, real Lodestar requests and mainnet
/// Deneb to Fulu ones) is documented in `openapi.yaml`.
#[test]
fn every_request_field_is_documented() {
    let s = spec();
    let schema =
        &s["paths"]["/api/v1/eth2/sign/{identifier}"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    let text = std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl")).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        documented(&s, schema, &v["request"], "").unwrap_or_else(|e| panic!("{}: {e}", v["name"]));
        n += 1;
    }
    assert_eq!(n, 36);
    // A field the spec does not describe is caught.
    let mut extra: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    extra["request"]["aggregation_slot"]["bogus"] = 1.into();
    assert!(documented(&s, schema, &extra["request"], "").is_err());
}
