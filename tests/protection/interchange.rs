//! EIP-3076 interchange tests.

use super::*;

fn interchange_tests() -> Vec<(String, Value)> {
    let dir = testkit::data_dir().join("eip3076-interchange-tests/tests/generated");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            (f.file_stem().unwrap().to_string_lossy().to_string(), v)
        })
        .collect()
}

fn parse_root(v: &Value) -> SigningRoot {
    v.as_str().map(|s| s.parse().unwrap()).unwrap_or(SigningRoot([0; 32]))
}

async fn run_interchange_test(backend: Backend, name: &str, test: &Value) {
    let (db, _guard) = fresh(backend).await;
    let gvr: Root = test["genesis_validators_root"].as_str().unwrap().parse().unwrap();
    db.pin_chain(gvr).await.unwrap();
    for (i, step) in test["steps"].as_array().unwrap().iter().enumerate() {
        let expect_ok = step["should_succeed"].as_bool().unwrap();
        let result = match Interchange::from_json(&step["interchange"].to_string()) {
            Ok(interchange) => db.import(&interchange).await.map(|_| ()),
            Err(e) => Err(ProtectionError::InvalidInterchange(e)),
        };
        assert_eq!(
            result.is_ok(),
            expect_ok,
            "{backend:?} {name} step {i}: import gave {result:?}"
        );
        for b in step["blocks"].as_array().unwrap() {
            let pubkey: PublicKey = b["pubkey"].as_str().unwrap().parse().unwrap();
            let p = SlashableMessage::Block {
                slot: b["slot"].as_str().unwrap().parse().unwrap(),
                root: parse_root(&b["signing_root"]),
            };
            let r = db
                .check_and_record(&pubkey, &p, "interchange-test")
                .await
                .map(|c| c.recorded);
            let expect = b["should_succeed"].as_bool().unwrap();
            assert_eq!(r.is_ok(), expect, "{backend:?} {name} step {i}: block {b} gave {r:?}");
            if !expect {
                assert!(matches!(r, Err(ProtectionError::Refused(_))), "{r:?}");
            }
        }
        for a in step["attestations"].as_array().unwrap() {
            let pubkey: PublicKey = a["pubkey"].as_str().unwrap().parse().unwrap();
            let p = SlashableMessage::Attestation {
                source: a["source_epoch"].as_str().unwrap().parse().unwrap(),
                target: a["target_epoch"].as_str().unwrap().parse().unwrap(),
                root: parse_root(&a["signing_root"]),
            };
            let r = db
                .check_and_record(&pubkey, &p, "interchange-test")
                .await
                .map(|c| c.recorded);
            let expect = a["should_succeed"].as_bool().unwrap();
            assert_eq!(
                r.is_ok(),
                expect,
                "{backend:?} {name} step {i}: attestation {a} gave {r:?}"
            );
            if !expect {
                assert!(
                    matches!(r, Err(ProtectionError::Refused(_))),
                    "{backend:?} {name}: {r:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eip3076_interchange_tests_pass_strictly() {
    let tests = interchange_tests();
    assert_eq!(tests.len(), 38);
    for backend in BACKENDS {
        for (name, test) in &tests {
            run_interchange_test(backend, name, test).await;
        }
    }
}
