//! Keys held in secret stores, in Web3Signer's YAML definitions: AWS Secrets Manager against a
//! real API server (moto), one secret per definition and in bulk; HashiCorp Vault and Azure
//! Key Vault against the exchanges their documentation gives (`tests/data/secret-stores`),
//! served over real HTTP(S). A store down after startup never stops signing.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::http::*;
use testkit::mockstore::{MockStore, Route, azure_secret_answer, documented, self_signed, vault_answer};
use testkit::moto::{ACCESS_KEY_ID, Moto, REGION, SECRET_ACCESS_KEY};
use testkit::server::Palisade;

fn sk(i: usize) -> String {
    testkit::interop_secret_keys()[i].clone()
}

fn pk(i: usize) -> String {
    testkit::interop_pubkeys()[i].clone()
}

async fn signs(p: &Palisade, i: usize) -> u16 {
    post(&sign_url(p, &pk(i)), randao(1, MINIMAL_GVR).to_string()).await.0
}

fn signer(defs: &Path, extra: &[&str]) -> Palisade {
    let net = minimal_network();
    let mut args = vec!["--key-config-path", defs.to_str().unwrap(), "--network", net.as_str()];
    args.extend(extra);
    Palisade::serve(&args)
}

fn aws_definition(moto: &Moto, secret: &str) -> String {
    format!(
        "type: aws-secret\nauthenticationMode: SPECIFIED\naccessKeyId: {ACCESS_KEY_ID}\nsecretAccessKey: {SECRET_ACCESS_KEY}\n\
         secretName: {secret}\nregion: {REGION}\nendpointOverride: {}\n",
        moto.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secret_definitions_and_a_store_that_goes_down() {
    let moto = Moto::start();
    moto.create_secret("validator-0", &sk(0), &[]).await;
    // Several keys in one secret, one per line (0x optional), as Web3Signer's bulk secrets.
    moto.create_secret(
        "validators-1-2",
        &format!("{}\n{}\n", sk(1), sk(2).trim_start_matches("0x")),
        &[],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aws.yaml"),
        format!(
            "{}---\n{}",
            aws_definition(&moto, "validator-0"),
            aws_definition(&moto, "validators-1-2")
        ),
    )
    .unwrap();
    // The default credential chain, from the environment.
    std::fs::write(
        dir.path().join("aws-env.yaml"),
        format!(
            "type: aws-secret\nauthenticationMode: ENVIRONMENT\nsecretName: validator-3\nregion: {REGION}\nendpointOverride: {}\n",
            moto.url()
        ),
    )
    .unwrap();
    moto.create_secret("validator-3", &sk(3), &[]).await;
    // The default credential chain reads them from the environment.
    let net = minimal_network();
    let p = Palisade::serve_with_env(
        &["--key-config-path", dir.path().to_str().unwrap(), "--network", &net],
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ],
    );
    keys_loaded(&p).await;
    for i in 0..4 {
        testkit::wait::until(&format!("key {i} from AWS signs"), Duration::from_secs(60), || async {
            (signs(&p, i).await == 200).then_some(())
        })
        .await;
    }
    let km = admin_get(&p, "/eth/v1/keystores").await;
    assert!(
        km["data"].as_array().unwrap().iter().all(|k| k["readonly"] == true),
        "{km}"
    );

    // moto goes away: every key already loaded keeps signing; a reload reports the store,
    // keeps the keys, and changes nothing else.
    moto.stop();
    for i in 0..4 {
        assert_eq!(signs(&p, i).await, 200, "key {i} after the store went down");
    }
    let (st, _) = admin(&p, Method::POST, "/reload", &json!({})).await;
    assert_eq!(st, 202);
    let state = testkit::wait::until("the reload finishes", Duration::from_secs(120), || async {
        let s = admin_get(&p, "/reload").await;
        (s["status"] != "running").then_some(s)
    })
    .await;
    assert_eq!(state["status"], "completed_with_errors", "{state}");
    let failed = state["last"]["failed"].to_string();
    assert!(
        failed.contains("validator-0") && failed.contains("cannot connect"),
        "{failed}"
    );
    assert!(state["last"]["removed"].as_array().unwrap().is_empty(), "{state}");
    for i in 0..4 {
        assert_eq!(signs(&p, i).await, 200, "key {i} after a reload with the store down");
    }
    // Nothing is missing: still ready (a fleet whose store blinks must not all leave the
    // balancer), with the definitions it could not read again named as stale.
    assert_eq!(get(&p.url("/readyz")).await.0, 200);
    let h = health(&p).await;
    assert_eq!(h["checks"][1]["data"]["failed"], 0, "{h}");
    assert!(h["checks"][1]["data"]["stale"].as_u64().unwrap() >= 1, "{h}");
}

/// A store that cannot be reached at startup: bounded retries, then a clear error naming the
/// store and the definition; the replica starts, is not ready, and the other keys sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_startup_is_named_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let dead = testkit::procs::lease_port();
    std::fs::write(
        dir.path().join("aws.yaml"),
        format!(
            "type: aws-secret\naccessKeyId: A\nsecretAccessKey: very-secret-value\nsecretName: nowhere\nregion: {REGION}\n\
             endpointOverride: http://127.0.0.1:{}\n",
            dead.port
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("raw.yaml"),
        format!("type: file-raw\nprivateKey: \"{}\"\n", sk(5)),
    )
    .unwrap();
    let p = signer(dir.path(), &[]);
    assert_eq!(signs(&p, 5).await, 200);
    let log = p.wait_for_log("key failed to load").await;
    assert!(
        log.contains("aws.yaml") && log.contains("nowhere") && log.contains("tried 4 times"),
        "{log}"
    );
    assert!(!log.contains("very-secret-value"), "a secret in the log");
    testkit::wait::until("the failure is counted", Duration::from_secs(30), || async {
        (health(&p).await["checks"][1]["data"]["failed"] == 1).then_some(())
    })
    .await;
    let (s, why) = get(&p.url("/readyz")).await;
    assert_eq!(s, 503, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_bulk_loading_by_prefix_and_tag() {
    let moto = Moto::start();
    moto.create_secret("fleet/a/0", &sk(0), &[("team", "blue")]).await;
    moto.create_secret("fleet/a/1", &format!("{}\n{}", sk(1), sk(2)), &[("team", "blue")])
        .await;
    moto.create_secret("fleet/a/other-team", &sk(3), &[("team", "red")])
        .await;
    moto.create_secret("elsewhere/4", &sk(4), &[("team", "blue")]).await;
    moto.create_secret("fleet/a/broken", "not a key", &[("team", "blue")])
        .await;
    let net = minimal_network();
    let url = moto.url();
    // The secret access key from the environment, never on the command line.
    let p = Palisade::serve_with_env(
        &[
            "--network",
            &net,
            "--aws-secrets-enabled",
            "--aws-secrets-access-key-id",
            ACCESS_KEY_ID,
            "--aws-secrets-region",
            REGION,
            "--aws-endpoint-override",
            &url,
            "--aws-secrets-prefixes-filter",
            "fleet/a/",
            "--aws-secrets-tag",
            "team=blue",
        ],
        &[("PALISADE_AWS_SECRETS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)],
    );
    keys_loaded(&p).await;
    for i in 0..3 {
        testkit::wait::until(&format!("bulk key {i} signs"), Duration::from_secs(60), || async {
            (signs(&p, i).await == 200).then_some(())
        })
        .await;
    }
    // Another team's secret, and a secret outside the prefix: not loaded.
    assert_eq!(signs(&p, 3).await, 404);
    assert_eq!(signs(&p, 4).await, 404);
    // The broken secret fails alone, named, without its value.
    let h = health(&p).await;
    let text = h.to_string();
    assert!(text.contains("fleet/a/broken") && !text.contains("not a key"), "{h}");

    // A new matching secret, a deleted one: a reload follows the store.
    moto.create_secret("fleet/a/5", &sk(5), &[("team", "blue")]).await;
    moto.delete_secret("fleet/a/0").await;
    let (st, _) = admin(&p, Method::POST, "/reload", &json!({})).await;
    assert_eq!(st, 202);
    let state = testkit::wait::until("the reload finishes", Duration::from_secs(60), || async {
        let s = admin_get(&p, "/reload").await;
        (s["status"] != "running").then_some(s)
    })
    .await;
    let added: Vec<&str> = state["last"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pubkey"].as_str().unwrap())
        .collect();
    let removed: Vec<&str> = state["last"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pubkey"].as_str().unwrap())
        .collect();
    assert_eq!(added, vec![pk(5).as_str()], "{state}");
    assert_eq!(removed, vec![pk(0).as_str()], "{state}");
    assert_eq!(signs(&p, 0).await, 404);
    assert_eq!(signs(&p, 5).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashicorp_vault_kv2_over_tls() {
    let (cert, key) = self_signed();
    let vault = MockStore::start(
        vec![
            Route {
                method: "GET",
                path: "/v1/secret/data/validator-6".into(),
                status: 200,
                body: vault_answer(json!({"value": sk(6).trim_start_matches("0x")})),
            },
            Route {
                method: "GET",
                path: "/v1/secret/data/forbidden".into(),
                status: 403,
                body: documented("vault/permission-denied.json"),
            },
        ],
        Some((cert.clone(), key)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault-ca.pem"), &cert).unwrap();
    // Web3Signer's field names, strings for numbers and booleans as its documentation writes them.
    let def = |path: &str| {
        format!(
            "type: \"hashicorp\"\nkeyType: \"BLS\"\ntlsEnabled: \"true\"\ntlsCaFile: \"vault-ca.pem\"\nkeyPath: \"/v1/secret/data/{path}\"\n\
             keyName: \"value\"\nserverHost: \"localhost\"\nserverPort: \"{}\"\ntimeout: \"10000\"\ntoken: \"s.MuZwBqZ0iE1HzvD64v3HMlhT\"\n",
            vault.port()
        )
    };
    std::fs::write(dir.path().join("vault.yaml"), def("validator-6")).unwrap();
    std::fs::write(dir.path().join("vault-denied.yaml"), def("forbidden")).unwrap();
    let p = signer(dir.path(), &[]);
    testkit::wait::until("the Vault key signs", Duration::from_secs(60), || async {
        (signs(&p, 6).await == 200).then_some(())
    })
    .await;
    let asked = vault.requests();
    let get = asked
        .iter()
        .find(|r| r.uri.ends_with("validator-6"))
        .expect("asked Vault");
    assert!(
        get.headers
            .iter()
            .any(|(k, v)| k == "x-vault-token" && v == "s.MuZwBqZ0iE1HzvD64v3HMlhT")
    );
    let h = health(&p).await.to_string();
    assert!(
        h.contains("vault-denied.yaml") && h.contains("permission denied"),
        "{h}"
    );
    assert!(!h.contains("MuZwBq") && !p.log().contains("MuZwBq"), "the token leaked");

    // Web3Signer's tlsKnownServersPath: the server's certificate fingerprint, not a CA.
    let fp = {
        use rustls_pki_types::pem::PemObject;
        use sha2::Digest;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        hex::encode_upper(sha2::Sha256::digest(der.as_ref()))
    };
    let pinned = tempfile::tempdir().unwrap();
    std::fs::write(
        pinned.path().join("knownhosts"),
        format!("localhost:{} {fp}\n", vault.port()),
    )
    .unwrap();
    std::fs::write(
        pinned.path().join("vault.yaml"),
        def("validator-6").replace("tlsCaFile: \"vault-ca.pem\"", "tlsKnownServersPath: \"knownhosts\""),
    )
    .unwrap();
    let q = signer(pinned.path(), &[]);
    testkit::wait::until("the pinned Vault key signs", Duration::from_secs(60), || async {
        (signs(&q, 6).await == 200).then_some(())
    })
    .await;
    // Another certificate than the pinned one is refused.
    std::fs::write(
        pinned.path().join("knownhosts"),
        format!("localhost:{} {}\n", vault.port(), "AB".repeat(32)),
    )
    .unwrap();
    std::fs::remove_file(pinned.path().join("vault.yaml")).unwrap();
    std::fs::write(
        pinned.path().join("vault2.yaml"),
        def("validator-6").replace("tlsCaFile: \"vault-ca.pem\"", "tlsKnownServersPath: \"knownhosts\""),
    )
    .unwrap();
    let r = signer(pinned.path(), &[]);
    let log = r.wait_for_log("key failed to load").await;
    assert!(log.contains("not in tlsKnownServersPath"), "{log}");
}

/// A store that answers with a redirect (a Vault standby does) is not followed: the token
/// would go to wherever it points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_never_carries_the_token_elsewhere() {
    let elsewhere = MockStore::start(Vec::<Route>::new(), None).await;
    let vault = MockStore::start(
        vec![
            Route {
                method: "GET",
                path: "/v1/secret/data/validator-6".into(),
                status: 307,
                body: String::new(),
            }
            .with_header("location", &format!("{}/v1/secret/data/validator-6", elsewhere.base)),
        ],
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vault.yaml"),
        format!(
            "type: hashicorp\nkeyPath: /v1/secret/data/validator-6\nserverHost: 127.0.0.1\nserverPort: {}\ntoken: s.redirected-token\n",
            vault.port()
        ),
    )
    .unwrap();
    let p = signer(dir.path(), &[]);
    let log = p.wait_for_log("key failed to load").await;
    assert!(log.contains("307"), "{log}");
    assert!(!vault.requests().is_empty(), "Vault was never asked");
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect was followed: {:?}",
        elsewhere.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_key_vault_with_a_client_secret() {
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let routes = vec![
        Route {
            method: "POST",
            path: format!("/{tenant}/oauth2/v2.0/token"),
            status: 200,
            body: documented("azure/token.json"),
        },
        Route {
            method: "GET",
            path: "/secrets/validator-7".into(),
            status: 200,
            body: azure_secret_answer(&sk(7)),
        },
        Route {
            method: "GET",
            path: "/secrets/missing".into(),
            status: 404,
            body: documented("azure/secret-not-found.json"),
        },
        Route {
            method: "POST",
            path: "/wrong-tenant/oauth2/v2.0/token".into(),
            status: 401,
            body: documented("azure/token-invalid-client.json"),
        },
    ];
    let azure = MockStore::start(routes, None).await;
    let dir = tempfile::tempdir().unwrap();
    let def = |secret: &str, tenant: &str| {
        format!(
            "type: \"azure-secret\"\nvaultName: \"palisade\"\nvaultUrl: \"{}\"\nsecretName: \"{secret}\"\n\
             clientId: \"8f5e5e69-8a5d-4e8f-a1b9-7b9c4e5d6a7b\"\nclientSecret: \"c1ient~s3cret\"\ntenantId: \"{tenant}\"\n",
            azure.base
        )
    };
    std::fs::write(dir.path().join("azure.yaml"), def("validator-7", tenant)).unwrap();
    std::fs::write(dir.path().join("azure-missing.yaml"), def("missing", tenant)).unwrap();
    std::fs::write(
        dir.path().join("azure-bad-client.yaml"),
        def("validator-7", "wrong-tenant"),
    )
    .unwrap();
    let net = minimal_network();
    let p = Palisade::serve_with_env(
        &["--key-config-path", dir.path().to_str().unwrap(), "--network", &net],
        &[("AZURE_AUTHORITY_HOST", azure.base.as_str())],
    );
    testkit::wait::until("the Azure key signs", Duration::from_secs(60), || async {
        (signs(&p, 7).await == 200).then_some(())
    })
    .await;
    // The token was asked for as the documentation says, then used.
    let asked = azure.requests();
    let token = asked
        .iter()
        .find(|r| r.uri.contains(tenant))
        .expect("asked for a token");
    for field in [
        "grant_type=client_credentials",
        "client_id=8f5e5e69-8a5d-4e8f-a1b9-7b9c4e5d6a7b",
        "scope=https%3A%2F%2Fvault.azure.net%2F.default",
        "client_secret=c1ient~s3cret",
    ] {
        assert!(token.body.contains(field), "{field} not in {}", token.body);
    }
    let get = asked
        .iter()
        .find(|r| r.uri.starts_with("/secrets/validator-7"))
        .unwrap();
    assert!(get.uri.contains("api-version=7.4"), "{}", get.uri);
    assert!(
        get.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Bearer eyJ0eXAi"))
    );
    let h: Value = health(&p).await;
    let text = h.to_string();
    assert!(
        text.contains("SecretNotFound") && text.contains("invalid_client"),
        "{h}"
    );
    assert!(
        !text.contains("s3cret") && !p.log().contains("s3cret"),
        "the client secret leaked"
    );
}
