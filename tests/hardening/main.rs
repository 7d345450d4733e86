//! What a web page, a hostile client, a hostile keystore, a planted file or a careless host
//! can do to the signer, tried against the real binary (issues 14 and 25), one file per kind
//! of attack. Deleted keys on other replicas, the chain pinned by unknown keys and trailing
//! data are attacked in `http_api`, `chain_pin.rs` and the parser's unit tests.

mod admin;
mod bodies;
mod connections;
mod database;
mod files;
mod imports;
mod keys;
mod logs;
mod web;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The status and the body as text.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The signer's `host:port`.
pub fn addr(p: &testkit::server::Palisade) -> String {
    p.base.trim_start_matches("http://").to_string()
}

/// True when the server closed the connection (EOF or reset) within `within`.
pub fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or an error answer first, then the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Whether the server has closed this non-blocking connection (EOF or reset) by now.
pub fn is_closed_now(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// One HTTP/1.1 response read from `stream`: status, head (lower-cased) and body.
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String, String)> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..]).to_string();
    Ok((status, head, body))
}

/// Writes `request` on `stream` and reads the answer.
pub fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, String, String) {
    stream.write_all(request).unwrap();
    read_response(stream).unwrap()
}

/// The value of a metric line starting with `name` (labels included), 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A field of /proc/PID/status, in KiB (VmRSS, VmHWM).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim_start_matches(':').trim().to_string())
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap()
}

/// The log written since `from` bytes.
pub fn log_since(p: &testkit::server::Palisade, from: usize) -> String {
    p.log()[from..].to_string()
}

/// Lets this test process hold many sockets (the default soft limit is 1024 files).
pub fn many_sockets() {
    palisade::process::raise_open_file_limit();
}

/// The largest resident size of a process seen while watching it (sampled every 20 ms).
pub struct PeakMemory {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakMemory {
    pub fn watch(pid: u32) -> PeakMemory {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(memory_kib(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        PeakMemory { stop, thread }
    }

    /// The peak, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
