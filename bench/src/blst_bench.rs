//! Raw blst signing rate: the ceiling any signer on this machine can reach.

use std::time::{Duration, Instant};

use palisade::keys::SecretKey;
use palisade::types::SigningRoot;
use zeroize::Zeroizing;

/// Signatures per second with `threads` threads signing for `seconds`.
pub fn rate(threads: usize, seconds: f64) -> f64 {
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut b = Zeroizing::new([0u8; 32]);
                    b[31] = t as u8 + 1;
                    let sk = SecretKey::from_bytes(&b).expect("valid scalar");
                    let mut root = SigningRoot([t as u8; 32]);
                    let mut n = 0u64;
                    while start.elapsed() < deadline {
                        root.0[0..8].copy_from_slice(&n.to_le_bytes());
                        std::hint::black_box(sk.sign(&root));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measures and prints; returns the all-cores rate.
pub fn report(seconds: f64) -> f64 {
    let one = rate(1, seconds);
    let all = rate(cores(), seconds);
    println!(
        "raw blst, 1 core:          {one:>9.0} signatures/s ({:.0} us each)",
        1e6 / one
    );
    println!("raw blst, {} cores:         {all:>9.0} signatures/s", cores());
    all
}
