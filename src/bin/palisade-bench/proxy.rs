//! A TCP proxy between one Palisade replica and PostgreSQL that the fault harness can cut:
//! every open connection is dropped mid-stream and new ones are refused for a while.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub port: u16,
    cut_until: Arc<Mutex<Option<Instant>>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    pub async fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (cut, live) = (cut_until.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let refusing = cut.lock().unwrap().is_some_and(|t| Instant::now() < t);
                if refusing {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut l = live.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(task.abort_handle());
            }
        });
        Ok(Proxy { port, cut_until, conns })
    }

    /// Drops every open connection now and refuses new ones for `d`.
    pub fn cut(&self, d: Duration) {
        *self.cut_until.lock().unwrap() = Some(Instant::now() + d);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
