//! A TCP proxy between one Palisade replica and PostgreSQL that the harness can break in two
//! ways: `cut` (connections reset, new ones refused: a crashed host or a closed port) and
//! `blackhole` (connections stay open and nothing passes: a partition, where only timeouts
//! tell).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Clone, Default)]
struct Faults {
    cut_until: Arc<Mutex<Option<Instant>>>,
    frozen_until: Arc<Mutex<Option<Instant>>>,
}

impl Faults {
    fn cut(&self) -> bool {
        self.cut_until.lock().unwrap().is_some_and(|t| Instant::now() < t)
    }

    /// Waits while the blackhole lasts.
    async fn pass(&self) {
        loop {
            let until = *self.frozen_until.lock().unwrap();
            match until {
                Some(t) if Instant::now() < t => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => return,
            }
        }
    }
}

pub struct Proxy {
    pub port: u16,
    faults: Faults,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

/// Copies one direction, holding every byte while the blackhole lasts.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, faults: Faults) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        faults.pass().await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let faults = Faults::default();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (f, live) = (faults.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if f.cut() {
                    drop(client);
                    continue;
                }
                let f = f.clone();
                let task = tokio::spawn(async move {
                    f.pass().await;
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, f.clone()) => {}
                        _ = pump(sr, cw, f) => {}
                    }
                });
                let mut l = live.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(task.abort_handle());
            }
        });
        Ok(Proxy { port, faults, conns })
    }

    /// Drops every open connection now and refuses new ones for `d`.
    pub fn cut(&self, d: Duration) {
        *self.faults.cut_until.lock().unwrap() = Some(Instant::now() + d);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Lets nothing through, in either direction, for `d`; connections stay open.
    pub fn blackhole(&self, d: Duration) {
        *self.faults.frozen_until.lock().unwrap() = Some(Instant::now() + d);
    }
}
