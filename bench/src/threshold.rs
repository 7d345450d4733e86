//! `palisade-bench threshold`: what a 3-of-4 threshold group costs over a plain signer. Four
//! share nodes (each its own SQLite database, mutual TLS) and one coordinator, against one
//! plain signer with the same keys whole; the same closed loop of protected attestations
//! against each; latency, rate and the CPU of every process per signature, next to raw BLS.

use std::time::Duration;

use palisade::keys::keystore::{KdfChoice, Keystore};
use palisade::keys::threshold::{ShareInfo, split};
use testkit::pki::Pki;
use testkit::server::Palisade;

use crate::blst_bench;
use crate::fixtures::{raw_key_config, secret};
use crate::load::{attestation_loop, closed_loop, loop_connections};
use crate::protection_bench::wait_for_keys;

const T: usize = 3;
const N: usize = 4;

/// CPU seconds a process has used.
fn cpu(pid: u32) -> f64 {
    crate::breakdown::cpu_of(&pid.to_string()).unwrap_or(0.0)
}

pub fn run(validators: usize, connections: usize, seconds: f64) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("palisade-threshold.").tempdir()?;
    let pki = Pki::new();
    let plain_keys = work.path().join("plain-keys");
    let keys = raw_key_config(&plain_keys, validators)?;
    let password = "bench-share-password";
    for i in 1..=N {
        std::fs::create_dir_all(work.path().join(format!("node-{i}/keys")))?;
        std::fs::write(work.path().join(format!("node-{i}/password.txt")), password)?;
    }
    let defs = work.path().join("groups");
    std::fs::create_dir_all(&defs)?;
    for v in 0..validators {
        let (shares, vector) = split(&secret(v), T, N)?;
        for s in &shares {
            let mut ks = Keystore::encrypt(&s.secret, password, KdfChoice::Pbkdf2 { c: 1024 });
            ks.threshold = Some(ShareInfo::of(s.index, &vector, N));
            std::fs::write(
                work.path().join(format!("node-{}/keys/v{v}.json", s.index)),
                serde_json::to_string(&ks)?,
            )?;
        }
        let group = serde_json::json!({"group_public_key": vector.group_public_key(), "threshold": T,
            "shares": N, "verification_vector": vector.0});
        std::fs::write(defs.join(format!("v{v}.json")), group.to_string())?;
    }
    let nodes: Vec<Palisade> = (1..=N)
        .map(|i| {
            let dir = work.path().join(format!("node-{i}"));
            let args = [
                "--network".to_string(),
                "mainnet".into(),
                "--future-tolerance-secs".into(),
                "off".into(),
                "--keystores-path".into(),
                dir.join("keys").display().to_string(),
                "--keystores-password-file".into(),
                dir.join("password.txt").display().to_string(),
                "--tls-cert-file".into(),
                pki.path("server.pem"),
                "--tls-key-file".into(),
                pki.path("server.key"),
                "--tls-client-ca-file".into(),
                pki.path("ca.pem"),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Palisade::serve_in(&dir, &args)
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    for v in 0..validators {
        std::fs::write(
            defs.join(format!("v{v}.yaml")),
            format!(
                "type: threshold\ngroupFile: v{v}.json\nnodes: {}\ntlsClientCertFile: {}\ntlsClientKeyFile: {}\ntlsCaFile: {}\n",
                serde_json::to_string(&urls)?,
                pki.path("client.crt"),
                pki.path("client.key"),
                pki.path("ca.pem")
            ),
        )?;
    }
    let serve = |name: &str, keys_dir: &std::path::Path| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Palisade::serve_in(
            &dir,
            &[
                "--network",
                "mainnet",
                "--future-tolerance-secs",
                "off",
                "--key-config-path",
                keys_dir.to_str().unwrap(),
            ],
        )
    };
    let plain = serve("plain", &plain_keys);
    let coordinator = serve("coordinator", &defs);
    let addr = |p: &Palisade| p.base.trim_start_matches("http://").to_string();
    wait_for_keys(&addr(&plain), validators)?;
    wait_for_keys(&addr(&coordinator), validators)?;
    // The nodes decrypt their shares (cheap KDF) while the coordinator starts; a short warm-up
    // loop on other epochs makes sure they answer.
    let connections = loop_connections(connections, validators);
    std::thread::sleep(Duration::from_secs(2));
    let warm = closed_loop(
        &addr(&coordinator),
        connections,
        1.0,
        attestation_loop(&keys, connections, crate::messages::FULU_EPOCH + 10),
    );
    println!("warm-up through the coordinator: {}", warm.summary());

    let raw_us = 1e6 / blst_bench::rate(1, 2.0);
    println!("raw blst, 1 core: {raw_us:.0} us per signature");
    let measure = |name: &str, target: &Palisade, pids: Vec<u32>, epoch: u64| {
        let before: f64 = pids.iter().map(|p| cpu(*p)).sum();
        let r = closed_loop(
            &addr(target),
            connections,
            seconds,
            attestation_loop(&keys, connections, epoch),
        );
        let used: f64 = pids.iter().map(|p| cpu(*p)).sum::<f64>() - before;
        let per = used / r.ok().max(1) as f64 * 1e6;
        println!(
            "{name:<22} {:>7.0} signed/s  {}  CPU {:.0} us per signature = {:.1} x raw BLS",
            r.rate(),
            r.summary(),
            per,
            per / raw_us
        );
        (r, per)
    };
    let (p, plain_cpu) = measure(
        "plain signer",
        &plain,
        vec![plain.pid()],
        crate::messages::FULU_EPOCH + 100_000,
    );
    let mut pids: Vec<u32> = nodes.iter().map(Palisade::pid).collect();
    pids.push(coordinator.pid());
    let (t, group_cpu) = measure(
        "threshold 3-of-4",
        &coordinator,
        pids,
        crate::messages::FULU_EPOCH + 200_000,
    );
    println!(
        "added by the group: p50 +{:.2} ms, p99 +{:.2} ms; CPU per group signature {:.1} x the plain signer's ({} partials signed and checked, {} combined)",
        (t.percentile(0.5).as_secs_f64() - p.percentile(0.5).as_secs_f64()) * 1e3,
        (t.percentile(0.99).as_secs_f64() - p.percentile(0.99).as_secs_f64()) * 1e3,
        group_cpu / plain_cpu.max(1e-9),
        N,
        T
    );
    Ok(())
}
