//! Keys from secret stores and key reloads:
//! - `stores`: startup of N keys from AWS Secrets Manager (moto, bulk loading) against the
//!   same N keys as local `file-raw` definitions and as local keystores;
//! - `reload`: N new keystores reloaded while a client signs with the keys already loaded:
//!   the reload's time, and the signing latency before and during it.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade::keys::SecretKey;
use palisade::keys::keystore::{KdfChoice, Keystore};
use rayon::prelude::*;

use crate::fixtures::{raw_key_config, secret};
use crate::load::{LoadResult, attestation_loop, closed_loop, http_get, ms};
use testkit::moto::{ACCESS_KEY_ID, Moto, REGION, SECRET_ACCESS_KEY};
use testkit::server::Palisade;

const PASSWORD: &str = "palisade-bench-password";

/// Waits until the signer has `count` keys loaded and nothing still loading; the time it took.
fn time_to_keys(p: &Palisade, count: usize, started: Instant) -> anyhow::Result<Duration> {
    let addr = p.base.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let (_, body) = http_get(addr, "/healthcheck")?;
        let h: serde_json::Value = serde_json::from_str(&body)?;
        let k = &h["checks"][1]["data"];
        if k["loaded"] == count && k["loading"] == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "keys did not load: {k}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keystore_dir(dir: &Path, keys: &[SecretKey], c: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stores = Keystore::encrypt_fixtures_sharing_one_salt(keys, PASSWORD, KdfChoice::Pbkdf2 { c });
    stores
        .par_iter()
        .enumerate()
        .try_for_each(|(i, ks)| -> anyhow::Result<()> {
            std::fs::write(dir.join(format!("keystore-{i:06}.json")), serde_json::to_vec(ks)?)?;
            Ok(())
        })?;
    Ok(())
}

pub fn stores(count: usize, pbkdf2_c: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let work = tempfile::Builder::new().prefix("palisade-bench-stores.").tempdir()?;
    let keys: Vec<SecretKey> = (0..count).into_par_iter().map(secret).collect();

    println!("key sources: {count} keys at startup (time from process start to all usable)");
    // AWS Secrets Manager (moto on loopback), bulk loading by prefix.
    let moto = Moto::start();
    let created = Instant::now();
    let secrets: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("bench/{i:06}"), format!("0x{}", hex::encode(*k.to_bytes()))))
        .collect();
    rt.block_on(moto.create_secrets(secrets, &[("fleet", "bench")]));
    println!(
        "  ({count} secrets created in moto in {:.1}s)",
        created.elapsed().as_secs_f64()
    );
    let url = moto.url();
    let started = Instant::now();
    let p = Palisade::serve_with_env(
        &[
            "--network",
            "mainnet",
            "--aws-secrets-enabled",
            "--aws-secrets-access-key-id",
            ACCESS_KEY_ID,
            "--aws-secrets-region",
            REGION,
            "--aws-endpoint-override",
            &url,
            "--aws-secrets-prefixes-filter",
            "bench/",
            "--key-wait-ms",
            "60000",
        ],
        &[("PALISADE_AWS_SECRETS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)],
    );
    let aws = time_to_keys(&p, count, started)?;
    println!("  AWS Secrets Manager (moto), bulk:       {:>7.2} s", aws.as_secs_f64());
    drop(p);
    drop(moto);

    // The same keys as local file-raw definitions.
    let defs = work.path().join("defs");
    raw_key_config(&defs, count)?;
    let started = Instant::now();
    let p = Palisade::serve_in(
        work.path(),
        &["--network", "mainnet", "--key-config-path", defs.to_str().unwrap()],
    );
    let raw = time_to_keys(&p, count, started)?;
    println!("  local file-raw definitions:             {:>7.2} s", raw.as_secs_f64());
    drop(p);

    // The same keys as local keystores (pbkdf2 at the given cost).
    let ks = work.path().join("keystores");
    keystore_dir(&ks, &keys, pbkdf2_c)?;
    std::fs::write(work.path().join("password.txt"), PASSWORD)?;
    let started = Instant::now();
    let pw = work.path().join("password.txt");
    let p = Palisade::serve_in(
        work.path(),
        &[
            "--network",
            "mainnet",
            "--keystores-path",
            ks.to_str().unwrap(),
            "--keystores-password-file",
            pw.to_str().unwrap(),
        ],
    );
    let local = time_to_keys(&p, count, started)?;
    println!(
        "  local keystores (pbkdf2, c = {pbkdf2_c}):   {:>7.2} s",
        local.as_secs_f64()
    );
    Ok(())
}

pub fn reload(count: usize, pbkdf2_c: u32, connections: usize) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("palisade-bench-reload.").tempdir()?;
    // The keys a client signs with, loaded at startup.
    let signing = 32;
    let defs = work.path().join("defs");
    let pubkeys = raw_key_config(&defs, signing)?;
    // The keystores the reload brings (other keys than those).
    let new_keys: Vec<SecretKey> = (signing..signing + count).into_par_iter().map(secret).collect();
    let staged = work.path().join("staged");
    keystore_dir(&staged, &new_keys, pbkdf2_c)?;
    let ks = work.path().join("keystores");
    std::fs::create_dir_all(&ks)?;
    let pw = work.path().join("password.txt");
    std::fs::write(&pw, PASSWORD)?;
    let p = Palisade::serve_in(
        work.path(),
        &[
            "--network",
            "mainnet",
            "--future-tolerance-secs",
            "off",
            "--key-config-path",
            defs.to_str().unwrap(),
            "--keystores-path",
            ks.to_str().unwrap(),
            "--keystores-password-file",
            pw.to_str().unwrap(),
        ],
    );
    time_to_keys(&p, signing, Instant::now())?;
    let addr = p.base.trim_start_matches("http://").to_string();
    let token = p.token();
    let connections = connections.min(signing);
    let make = attestation_loop(&pubkeys, connections, crate::messages::FULU_EPOCH + 10);

    let before = closed_loop(&addr, connections, 5.0, make.clone());
    // Move the keystores in, then ask for the reload while the client signs.
    for e in std::fs::read_dir(&staged)? {
        let e = e?;
        std::fs::rename(e.path(), ks.join(e.file_name()))?;
    }
    let reload_start = Instant::now();
    let accepted = post_reload(&addr, &token)?;
    anyhow::ensure!(accepted == 202, "POST /reload answered {accepted}");
    let make2 = attestation_loop(&pubkeys, connections, crate::messages::FULU_EPOCH + 100_000);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (during, took) = std::thread::scope(|s| {
        // The reload's end, polled every 50 ms.
        let watcher = s.spawn(|| {
            let took = wait_reload(&addr, &token, reload_start);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            took
        });
        // Signing in half-second slices until then.
        let mut all = LoadResult::default();
        let mut slice = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let make = make2.clone();
            let offset = slice * 1_000_000;
            let shifted: crate::load::MakeRequest = std::sync::Arc::new(move |c, seq| make(c, seq + offset));
            let r = closed_loop(&addr, connections, 0.5, shifted);
            all.latencies.extend(r.latencies);
            for (k, v) in r.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
            all.transport_errors += r.transport_errors;
            all.elapsed += r.elapsed;
            slice += 1;
        }
        all.latencies.sort();
        (all, watcher.join().expect("watcher"))
    });
    let took = took?;
    let loaded = time_to_keys(&p, signing + count, Instant::now()).is_ok();
    println!(
        "reload: {count} new keystores (pbkdf2, c = {pbkdf2_c}) while {connections} connections sign protected \
         attestations with {signing} other keys"
    );
    println!(
        "  reload finished in {:.2} s; all keys usable: {loaded}",
        took.as_secs_f64()
    );
    println!(
        "  signing before the reload: {:.0}/s  {}",
        before.rate(),
        before.summary()
    );
    println!(
        "  signing during the reload: {:.0}/s  {}",
        during.rate(),
        during.summary()
    );
    println!(
        "  p99 during / before: {:.2}",
        ms(during.percentile(0.99)) / ms(before.percentile(0.99)).max(1e-9)
    );
    Ok(())
}

fn post_reload(addr: &str, token: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "POST /reload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
}

fn reload_state(addr: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET /reload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    Ok(serde_json::from_str(&body[start..end])?)
}

fn wait_reload(addr: &str, token: &str, start: Instant) -> anyhow::Result<Duration> {
    loop {
        let s = reload_state(addr, token)?;
        if s["status"] != "running" {
            anyhow::ensure!(s["status"] == "completed", "the reload ended {s}");
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
