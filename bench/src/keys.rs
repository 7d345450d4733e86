//! The keystore-loading benchmark.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use palisade::keys::SecretKey;
use palisade::keys::keystore::{KdfChoice, Keystore};
use palisade::types::PublicKey;
use rayon::prelude::*;

use crate::blst_bench::cores;
use crate::fixtures::secret;
use crate::load::http_get;
use testkit::server::Palisade;

const PASSWORD: &str = "palisade-bench-password";

fn kdf_choice(kdf: &str) -> anyhow::Result<KdfChoice> {
    match kdf {
        "scrypt" => Ok(KdfChoice::Scrypt { log_n: 18 }),
        "pbkdf2" => Ok(KdfChoice::Pbkdf2 { c: 262_144 }),
        other => anyhow::bail!("--kdf {other}: use scrypt or pbkdf2"),
    }
}

/// Generates (once) `count` keystores at the default EIP-2335 cost.
fn ensure_keystores(dir: &Path, count: usize, kdf: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("password.txt"), PASSWORD)?;
    let have = std::fs::read_dir(dir)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    if have == count {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::remove_file(p)?;
        }
    }
    let choice = kdf_choice(kdf)?;
    println!("generating {count} {kdf} keystores in {} (once) ...", dir.display());
    let start = Instant::now();
    // Fixtures share one salt so that generating them runs the KDF once; the signer still
    // runs it once per keystore when it loads them, which is what is measured.
    let keys: Vec<SecretKey> = (0..count).into_par_iter().map(secret).collect();
    let stores = Keystore::encrypt_fixtures_sharing_one_salt(&keys, PASSWORD, choice);
    stores
        .par_iter()
        .enumerate()
        .try_for_each(|(i, ks)| -> anyhow::Result<()> {
            std::fs::write(dir.join(format!("keystore-{i:06}.json")), serde_json::to_vec(ks)?)?;
            Ok(())
        })?;
    println!("  generated in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

pub fn keystore_loading(count: usize, kdf: &str, root: &Path, load_seconds: f64) -> anyhow::Result<()> {
    let dir = root.join(format!("{kdf}-{count}"));
    ensure_keystores(&dir, count, kdf)?;
    let dir = dir.canonicalize()?;

    // One key's cost, on one core, as the signer pays it (same code, same build).
    let sample: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(3)
        .collect();
    let start = Instant::now();
    for p in &sample {
        let ks = Keystore::from_json(&std::fs::read_to_string(p)?).map_err(|e| anyhow::anyhow!("{e}"))?;
        ks.decrypt(PASSWORD).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let one_key = start.elapsed() / sample.len() as u32;
    let ideal = one_key.mul_f64(count as f64 / cores() as f64);

    let work = tempfile::tempdir()?;
    let spawned = Instant::now();
    let p = Palisade::serve_in(
        work.path(),
        &[
            // Synthetic duties run ahead of the clock (many epochs per second): no window.
            "--future-tolerance-secs",
            "off",
            "--keystores-path",
            dir.to_str().unwrap(),
            "--keystores-password-file",
            dir.join("password.txt").to_str().unwrap(),
            "--network",
            "mainnet",
        ],
    );
    let addr = p.base.trim_start_matches("http://").to_string();
    let (status, _) = http_get(&addr, "/upcheck").context("upcheck")?;
    let up = spawned.elapsed();
    anyhow::ensure!(status == 200, "upcheck answered {status}");
    let mut polls = 0;
    let all_usable = loop {
        let (_, body) = http_get(&addr, "/healthcheck")?;
        let health: serde_json::Value = serde_json::from_str(&body)?;
        if health["checks"][1]["data"]["loading"] == 0 {
            anyhow::ensure!(
                health["checks"][1]["data"]["loaded"] == count,
                "not every key loaded: {health}"
            );
            break spawned.elapsed();
        }
        polls += 1;
        if polls % 40 == 0 {
            println!("  {} of {count} keys usable ...", health["checks"][1]["data"]["loaded"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "keystores: {count} x {kdf} (EIP-2335 default cost) on {} cores",
        cores()
    );
    println!("  one key on one core:        {:>8.1} ms", one_key.as_secs_f64() * 1e3);
    println!("  ideal (N x one key / cores): {:>8.2} s", ideal.as_secs_f64());
    println!("  server answered /upcheck:   {:>8.3} s after start", up.as_secs_f64());
    println!(
        "  all keys usable:            {:>8.2} s after start",
        all_usable.as_secs_f64()
    );
    println!(
        "  ratio to ideal:             {:>8.3}x (target <= 1.15x)",
        all_usable.as_secs_f64() / ideal.as_secs_f64()
    );

    // Memory with every key loaded and load running: protected attestations over all keys
    // (SQLite in the signer's working directory).
    if load_seconds > 0.0 {
        let pubkeys: Vec<PublicKey> = (0..count).map(|i| secret(i).public_key()).collect();
        let c = crate::load::loop_connections(16, pubkeys.len());
        let make = crate::load::attestation_loop(&pubkeys, c, crate::messages::FULU_EPOCH + 10);
        let r = crate::load::closed_loop(&addr, c, load_seconds, make);
        let (rss, peak) = crate::breakdown::memory_mib(p.pid()).unwrap_or((0.0, 0.0));
        println!(
            "  under load ({:.0} protected attestations/s, statuses {:?}): {rss:.1} MiB resident (target < 150 MiB), {peak:.1} MiB peak (the KDF's buffers while decrypting)",
            r.rate(),
            r.statuses
        );
    }
    Ok(())
}
