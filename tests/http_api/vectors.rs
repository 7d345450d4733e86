//! Signing vectors.

use super::*;

/// Every recorded vector signs to exactly the recorded signature, in file order, through
/// the real server. Sent again, every one returns the same signature, except blocks and
/// attestations older than the latest one signed for their key: those are refused (412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_vectors_sign_to_the_recorded_signatures() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    for (network, net_arg) in [("minimal", minimal_network()), ("mainnet", "mainnet".to_string())] {
        let mut args = key_args(&ks, &pw);
        args.extend(["--network", &net_arg]);
        let p = Palisade::serve(&args);
        let vs = vectors(network);
        assert!(vs.len() >= 10, "{network}: only {} vectors", vs.len());
        for v in &vs {
            let (status, body) = post(&sign_url(&p, v["pubkey"].as_str().unwrap()), v["request"].to_string()).await;
            assert_eq!(status, 200, "{}: {body}", v["name"]);
            assert_eq!(body["signature"], v["signature"], "{}", v["name"]);
        }
        let mut repeats = 0;
        for (i, v) in vs.iter().enumerate() {
            let t = v["request"]["type"].as_str().unwrap();
            let protected = matches!(t, "BLOCK" | "BLOCK_V2" | "ATTESTATION");
            let is_block = |t: &str| t.starts_with("BLOCK");
            // The latest message of its kind for this key, which may be repeated.
            let latest = !vs[i + 1..].iter().any(|w| {
                let u = w["request"]["type"].as_str().unwrap();
                w["pubkey"] == v["pubkey"]
                    && matches!(u, "BLOCK" | "BLOCK_V2" | "ATTESTATION")
                    && is_block(u) == is_block(t)
            });
            let (status, body) = post(&sign_url(&p, v["pubkey"].as_str().unwrap()), v["request"].to_string()).await;
            if protected && !latest {
                assert_eq!(status, 412, "{} again: {body}", v["name"]);
            } else {
                assert_eq!(status, 200, "{} again: {body}", v["name"]);
                assert_eq!(body["signature"], v["signature"], "{} again", v["name"]);
                repeats += protected as usize;
            }
        }
        assert!(repeats > 0, "{network}: no protected message was repeated");
    }
}
