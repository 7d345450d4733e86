//! Which connections are open, and which one gives way when all are taken.
//!
//! A crowd of sockets that never send a request must not lock validator clients out, and one
//! client address must not take every connection. So when the table is full (or the address
//! holds its share), the new connection is not refused: the one that has least claim gives
//! way. First a connection that never sent a byte, then one that never completed a request
//! (oldest first in each), then one that has been idle longest (at least `MIN_IDLE_TO_EVICT`). A connection with a request in
//! flight, or one that proved itself (a TLS client certificate or an accepted bearer token),
//! never gives way; only when every connection is such is the new one refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A real client's keep-alive connection between two requests is not taken for an idle one.
const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

/// Where a connection stands, for its deadlines and for eviction.
#[derive(Debug)]
pub struct ConnState {
    born: Instant,
    /// Milliseconds since `born` of the last change that restarts a deadline.
    since_ms: AtomicU64,
    phase: AtomicU8,
    in_flight: AtomicUsize,
    served: AtomicU64,
    proven: AtomicBool,
    heard: AtomicBool,
    http2: AtomicBool,
    evict: tokio::sync::Notify,
}

/// What a connection is waiting for; each phase has its own deadline (see `deadline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the first request (TLS handshake included) has not arrived.
    First = 0,
    /// Between requests, nothing received.
    Idle = 1,
    /// Between requests, part of the next request's head received (HTTP/1).
    Head = 2,
    /// A request is being read or answered.
    Busy = 3,
}

/// The deadlines of `Phase`s.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// First request after accept, and a request head once its first byte arrived.
    pub header: Duration,
    /// No request for this long after the last one: closed.
    pub idle: Duration,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            since_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::First as u8),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            proven: AtomicBool::new(false),
            heard: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::First,
            1 => Phase::Idle,
            2 => Phase::Head,
            _ => Phase::Busy,
        }
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived from the client. On HTTP/1 the first byte after an idle spell starts a
    /// request head, which must then arrive within the header deadline; HTTP/2 sends frames
    /// of its own (pings, window updates), so there only requests count.
    pub fn received(&self, first_bytes: &[u8]) {
        self.heard.store(true, Ordering::Relaxed);
        if self.served.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && first_bytes.starts_with(b"PRI * HTTP/2.0")
        {
            self.http2.store(true, Ordering::Relaxed);
        }
        if self.phase() == Phase::Idle && !self.http2.load(Ordering::Relaxed) {
            let _ = self.phase.compare_exchange(
                Phase::Idle as u8,
                Phase::Head as u8,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            self.since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// A request's head has been read; it is answered until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.enter(Phase::Busy);
        InFlight(self.clone())
    }

    /// The client showed a credential: a TLS client certificate or an accepted token.
    pub fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// When the current phase runs out, if it can.
    pub fn deadline(&self, d: Deadlines) -> Option<Instant> {
        let limit = match self.phase() {
            Phase::First | Phase::Head => d.header,
            Phase::Idle => d.idle,
            Phase::Busy => return None,
        };
        let since = Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        Some(self.born + since + limit)
    }

    /// Resolves when the table chose this connection to give way.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0 && self.phase() == Phase::Idle)
            .then(|| Duration::from_millis(self.now_ms().saturating_sub(self.since_ms.load(Ordering::Acquire))))
    }
}

/// A request being answered; back to idle when the last one ends.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(Phase::Idle);
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max` connections are open and none may give way.
    Full { max: usize },
    /// The client address holds its share and none of its connections may give way.
    ClientShare { per_client: usize },
}

/// Who gave way for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    None,
    /// It never completed a request.
    Silent,
    /// Idle between requests.
    Idle,
}

struct Entry {
    ip: IpAddr,
    counted: bool,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

/// The open connections, with the limits of `--http-max-connections` and
/// `--http-max-connections-per-client`.
pub struct Connections {
    max: usize,
    per_client: usize,
    table: Mutex<Table>,
}

/// A connection's place in the table, given back on drop.
pub struct Admitted {
    id: u64,
    table: Arc<Connections>,
    pub state: Arc<ConnState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

impl Connections {
    pub fn new(max: usize, per_client: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            per_client: per_client.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, making room if it must. Trusted proxies carry many
    /// clients, so their address has no share limit (`share_exempt`).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, share_exempt: bool) -> Result<(Admitted, Evicted), Refused> {
        let ip = ip.to_canonical();
        let mut t = self.lock();
        let mut evicted = Evicted::None;
        if !share_exempt && t.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_client {
            match victim(&t, |e| e.ip == ip) {
                Some((id, kind)) => {
                    evict(&mut t, id);
                    evicted = kind;
                }
                None => {
                    return Err(Refused::ClientShare {
                        per_client: self.per_client,
                    });
                }
            }
        }
        if t.open.len() >= self.max {
            match victim(&t, |_| true) {
                Some((id, kind)) => {
                    evict(&mut t, id);
                    evicted = kind;
                }
                None => return Err(Refused::Full { max: self.max }),
            }
        }
        let id = t.next;
        t.next += 1;
        let state = Arc::new(ConnState::new());
        if !share_exempt {
            *t.per_ip.entry(ip).or_default() += 1;
        }
        t.open.insert(
            id,
            Entry {
                ip,
                counted: !share_exempt,
                state: state.clone(),
            },
        );
        Ok((
            Admitted {
                id,
                table: self.clone(),
                state,
            },
            evicted,
        ))
    }

    fn remove(&self, id: u64) {
        let mut t = self.lock();
        forget(&mut t, id);
    }
}

/// The connection with least claim among those `eligible`: the oldest that never sent a
/// byte, else the oldest that never completed a request, else the longest idle.
fn victim(t: &Table, eligible: impl Fn(&Entry) -> bool) -> Option<(u64, Evicted)> {
    let candidates = t
        .open
        .iter()
        .filter(|(_, e)| eligible(e) && !e.state.proven.load(Ordering::Relaxed))
        .filter(|(_, e)| e.state.in_flight.load(Ordering::Acquire) == 0);
    let mut mute: Option<(u64, Instant)> = None;
    let mut silent: Option<(u64, Instant)> = None;
    let mut idle: Option<(u64, Duration)> = None;
    for (&id, e) in candidates {
        let born = e.state.born;
        match e.state.phase() {
            Phase::First => {
                let class = if e.state.heard.load(Ordering::Relaxed) {
                    &mut silent
                } else {
                    &mut mute
                };
                if class.is_none_or(|(_, oldest)| born < oldest) {
                    *class = Some((id, born));
                }
            }
            _ => {
                if let Some(d) = e.state.idle_for()
                    && d >= MIN_IDLE_TO_EVICT
                    && idle.is_none_or(|(_, longest)| d > longest)
                {
                    idle = Some((id, d));
                }
            }
        }
    }
    mute.or(silent)
        .map(|(id, _)| (id, Evicted::Silent))
        .or(idle.map(|(id, _)| (id, Evicted::Idle)))
}

/// Takes the connection out of the table at once (so its place is free now) and tells its
/// task to close it.
fn evict(t: &mut Table, id: u64) {
    if let Some(state) = forget(t, id) {
        state.evict.notify_one();
    }
}

fn forget(t: &mut Table, id: u64) -> Option<Arc<ConnState>> {
    let e = t.open.remove(&id)?;
    if e.counted
        && let Some(n) = t.per_ip.get_mut(&e.ip)
    {
        *n -= 1;
        if *n == 0 {
            t.per_ip.remove(&e.ip);
        }
    }
    Some(e.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_table_makes_room_by_closing_the_oldest_silent_connection() {
        let table = Connections::new(3, 10);
        let (a, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        let (b, _) = table.admit(ip("10.0.0.2"), false).unwrap();
        let (c, _) = table.admit(ip("10.0.0.3"), false).unwrap();
        // `a` answered a request and is busy with another: never evicted.
        let _busy = a.state.request();
        let (_d, evicted) = table.admit(ip("10.0.0.4"), false).unwrap();
        assert_eq!(evicted, Evicted::Silent);
        assert_eq!(table.open(), 3);
        // `b` was the oldest silent one; `c` is still in.
        let t = table.lock();
        assert!(!t.open.contains_key(&b.id));
        assert!(t.open.contains_key(&c.id));
        assert!(t.open.contains_key(&a.id));
    }

    #[test]
    fn a_connection_that_sent_bytes_outlasts_one_that_sent_none() {
        let table = Connections::new(2, 10);
        let (a, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        let (b, _) = table.admit(ip("10.0.0.2"), false).unwrap();
        a.state.received(b"POST /api/v1/eth2/sign");
        let (_c, _) = table.admit(ip("10.0.0.3"), false).unwrap();
        let t = table.lock();
        assert!(t.open.contains_key(&a.id) && !t.open.contains_key(&b.id));
    }

    #[test]
    fn proven_and_busy_connections_never_give_way() {
        let table = Connections::new(2, 10);
        let (a, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        let (b, _) = table.admit(ip("10.0.0.2"), false).unwrap();
        a.state.prove();
        let _busy = b.state.request();
        assert_eq!(table.admit(ip("10.0.0.3"), false).err(), Some(Refused::Full { max: 2 }));
        drop(b);
        assert!(table.admit(ip("10.0.0.3"), false).is_ok());
    }

    #[test]
    fn one_address_beyond_its_share_displaces_its_own_connections_only() {
        let table = Connections::new(10, 2);
        let (other, _) = table.admit(ip("10.0.0.9"), false).unwrap();
        let (x1, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        let (_x2, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        let (_x3, evicted) = table.admit(ip("10.0.0.1"), false).unwrap();
        assert_eq!(evicted, Evicted::Silent);
        let t = table.lock();
        assert!(
            !t.open.contains_key(&x1.id),
            "the address's oldest silent connection gave way"
        );
        assert!(
            t.open.contains_key(&other.id),
            "another address's connection is untouched"
        );
        assert_eq!(t.per_ip[&ip("10.0.0.1")], 2);
        drop(t);
        // A trusted proxy has no share limit.
        for _ in 0..5 {
            table.admit(ip("10.0.0.5"), true).unwrap();
        }
    }

    #[test]
    fn an_idle_connection_gives_way_only_after_a_second_of_idleness() {
        let table = Connections::new(1, 10);
        let (a, _) = table.admit(ip("10.0.0.1"), false).unwrap();
        drop(a.state.request());
        assert_eq!(a.state.phase(), Phase::Idle);
        assert!(
            table.admit(ip("10.0.0.2"), false).is_err(),
            "idle for less than a second"
        );
        std::thread::sleep(MIN_IDLE_TO_EVICT + Duration::from_millis(20));
        let (_b, evicted) = table.admit(ip("10.0.0.2"), false).unwrap();
        assert_eq!(evicted, Evicted::Idle);
    }

    #[test]
    fn phases_set_the_deadline() {
        let d = Deadlines {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        };
        let s = Arc::new(ConnState::new());
        let first = s.deadline(d).unwrap();
        assert!(first <= Instant::now() + d.header);
        let r = s.request();
        assert_eq!(s.deadline(d), None);
        drop(r);
        assert!(
            s.deadline(d).unwrap() > Instant::now() + d.header,
            "idle: the long deadline"
        );
        s.received(b"POST /api");
        assert_eq!(s.phase(), Phase::Head);
        assert!(s.deadline(d).unwrap() <= Instant::now() + d.header);
        // HTTP/2 frames between requests are not a request head.
        let h2 = Arc::new(ConnState::new());
        h2.received(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(h2.request());
        h2.received(b"\x00\x00\x08\x06");
        assert_eq!(h2.phase(), Phase::Idle);
    }
}
