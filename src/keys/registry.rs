//! The keys this process can sign with, and the ones it is still unlocking or failed to load.
//!
//! The HTTP server starts before keys are unlocked: a key whose source declares its pubkey is
//! known (`Loading`) at once, so a request for it waits for it instead of getting a 404; and
//! while a source is still being listed (a secret store at startup), a request for a key not
//! known yet waits too. Keys are held behind the `SigningKey` handle, handed out only for the
//! length of one signature.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::handle::SigningKey;
use super::origin::Origin;
use crate::types::PublicKey;

#[derive(Clone)]
enum Entry {
    Loading {
        origin: Arc<Origin>,
    },
    Ready {
        key: Arc<dyn SigningKey>,
        origin: Arc<Origin>,
    },
    Failed {
        reason: Arc<str>,
        origin: Arc<Origin>,
    },
}

impl Entry {
    fn origin(&self) -> &Arc<Origin> {
        match self {
            Entry::Loading { origin } | Entry::Ready { origin, .. } | Entry::Failed { origin, .. } => origin,
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    Ready(Arc<dyn SigningKey>),
    Loading,
    Failed(Arc<str>),
    Unknown,
}

/// A key source that failed before a pubkey could be known (corrupt JSON, a store down).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadFailure {
    pub origin: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct KeyCounts {
    pub loaded: usize,
    pub loading: usize,
    pub failed: usize,
    /// Files or secrets a reload could not read whose keys stay loaded as they were (a store
    /// down, a file being written): worth a look, but nothing is missing.
    pub stale: usize,
}

/// A key the registry holds, as a reload sees it.
#[derive(Clone, Debug)]
pub struct Held {
    pub pubkey: PublicKey,
    pub origin: Arc<Origin>,
    pub ready: bool,
}

pub struct KeyRegistry {
    entries: RwLock<HashMap<PublicKey, Entry>>,
    /// Failures without a pubkey, with the source that reported them.
    anonymous_failures: RwLock<Vec<(Arc<str>, LoadFailure)>>,
    /// Units that could not be read again, whose keys were kept.
    stale: RwLock<Vec<(Arc<str>, LoadFailure)>>,
    /// Other definitions of a loaded key (the first one's origin is in `entries`): their
    /// signing policies all apply, so a second definition can only narrow what is signed.
    also: RwLock<HashMap<PublicKey, Vec<Arc<Origin>>>>,
    /// Sources still being listed for the first time: a key not known yet may still come.
    sources_pending: AtomicUsize,
    /// Bumped on every change so that waiters re-check.
    changed: watch::Sender<u64>,
}

impl Default for KeyRegistry {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            anonymous_failures: RwLock::default(),
            stale: RwLock::default(),
            also: RwLock::default(),
            sources_pending: AtomicUsize::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl KeyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// `n` more sources are being listed for the first time.
    pub fn sources_pending(&self, n: usize) {
        self.sources_pending.fetch_add(n, Ordering::SeqCst);
        self.notify();
    }

    /// One of them is done.
    pub fn source_listed(&self) {
        let _ = self
            .sources_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.notify();
    }

    pub fn any_source_pending(&self) -> bool {
        self.sources_pending_count() > 0
    }

    /// Sources still being listed for the first time (secret stores at startup).
    pub fn sources_pending_count(&self) -> usize {
        self.sources_pending.load(Ordering::SeqCst)
    }

    /// Announces a key whose secret is being unlocked. Returns false if the pubkey is
    /// already known (a duplicate definition).
    pub fn announce(&self, pubkey: PublicKey, origin: &Arc<Origin>) -> bool {
        let mut map = self.entries.write().expect("registry lock");
        match map.get(&pubkey) {
            Some(Entry::Failed { .. }) | None => {}
            Some(_) => return false,
        }
        map.insert(pubkey, Entry::Loading { origin: origin.clone() });
        drop(map);
        self.notify();
        true
    }

    /// Installs an unlocked key. Returns false (and drops the key) if another source already
    /// provided this pubkey, or if it was announced and has been removed since (a deletion
    /// while it was being unlocked must not be undone).
    pub fn insert_ready(&self, key: Arc<dyn SigningKey>, origin: &Arc<Origin>, announced: bool) -> bool {
        let pubkey = key.public_key();
        let mut map = self.entries.write().expect("registry lock");
        match map.get(&pubkey) {
            Some(Entry::Loading { origin: o }) if Arc::ptr_eq(o, origin) => {}
            None if !announced => {}
            Some(Entry::Failed { .. }) if !announced || Arc::ptr_eq(map[&pubkey].origin(), origin) => {}
            _ => return false,
        }
        map.insert(
            pubkey,
            Entry::Ready {
                key,
                origin: origin.clone(),
            },
        );
        drop(map);
        self.notify();
        true
    }

    /// Records a failure for a key whose pubkey is known, or for a source without one.
    pub fn fail(&self, pubkey: Option<PublicKey>, origin: &Arc<Origin>, reason: String) {
        match pubkey {
            Some(pk) => {
                let mut map = self.entries.write().expect("registry lock");
                // A failure must not replace a key loaded, or being unlocked, from elsewhere.
                let replace = match map.get(&pk) {
                    None | Some(Entry::Failed { .. }) => true,
                    Some(Entry::Loading { origin: o }) => Arc::ptr_eq(o, origin),
                    Some(Entry::Ready { .. }) => false,
                };
                if replace {
                    map.insert(
                        pk,
                        Entry::Failed {
                            reason: reason.into(),
                            origin: origin.clone(),
                        },
                    );
                }
            }
            None => {
                let mut list = self.anonymous_failures.write().expect("registry lock");
                // Two overlapping loads may report the same unit: once.
                if !list
                    .iter()
                    .any(|(s, f)| *s == origin.source && f.origin == origin.label)
                {
                    list.push((
                        origin.source.clone(),
                        LoadFailure {
                            origin: origin.label.clone(),
                            reason,
                        },
                    ));
                }
            }
        }
        self.notify();
    }

    /// Records a unit of `source` that could not be read again while its keys stay loaded.
    pub fn stale(&self, source: &Arc<str>, label: String, reason: String) {
        let mut list = self.stale.write().expect("registry lock");
        if !list.iter().any(|(s, f)| s == source && f.origin == label) {
            list.push((source.clone(), LoadFailure { origin: label, reason }));
        }
    }

    /// Records another definition of a key already defined elsewhere: the key stays loaded
    /// from the first, and the signing policies of both apply.
    pub fn also_defined(&self, pubkey: PublicKey, origin: &Arc<Origin>) {
        let mut also = self.also.write().expect("registry lock");
        let list = also.entry(pubkey).or_default();
        if !list.iter().any(|o| o.source == origin.source && o.unit == origin.unit) {
            list.push(origin.clone());
        }
    }

    /// The signing types the key may sign (every definition's policy, combined), and the
    /// definitions that set them, for the refusal's message. `None`: no definition limits it.
    pub fn policy(&self, pubkey: &PublicKey) -> Option<(crate::signing::policy::TypeSet, String)> {
        let main = self.origin(pubkey)?;
        let also = self.also.read().expect("registry lock");
        let mut types: Option<crate::signing::policy::TypeSet> = main.signing_types;
        let mut by = vec![main.label.clone()];
        for o in also.get(pubkey).into_iter().flatten() {
            if let Some(t) = o.signing_types {
                types = Some(types.map_or(t, |have| have.and(t)));
                by.push(o.label.clone());
            }
        }
        types.map(|t| (t, by.join(" and ")))
    }

    /// Gives a loaded key the origin its source gives it now (a changed policy, a renamed
    /// file): what signing and the Key Manager read next. A key still being unlocked keeps
    /// its own (its unlock installs it).
    pub fn update_origin(&self, pubkey: &PublicKey, origin: &Arc<Origin>) -> bool {
        let mut map = self.entries.write().expect("registry lock");
        match map.get_mut(pubkey) {
            Some(Entry::Ready { origin: o, .. }) if **o != **origin => {
                *o = origin.clone();
                true
            }
            _ => false,
        }
    }

    /// Forgets the failures `source` reported (before it reports again).
    pub fn clear_failures(&self, source: &str) {
        self.anonymous_failures
            .write()
            .expect("registry lock")
            .retain(|(s, _)| &**s != source);
        self.stale
            .write()
            .expect("registry lock")
            .retain(|(s, _)| &**s != source);
        let mut also = self.also.write().expect("registry lock");
        for list in also.values_mut() {
            list.retain(|o| &*o.source != source);
        }
        also.retain(|_, list| !list.is_empty());
        drop(also);
        self.entries
            .write()
            .expect("registry lock")
            .retain(|_, e| !(matches!(e, Entry::Failed { .. }) && &*e.origin().source == source));
        self.notify();
    }

    /// Forgets a key (Key Manager DELETE, a reload). Returns whether it was there.
    pub fn remove(&self, pubkey: &PublicKey) -> bool {
        let removed = self.entries.write().expect("registry lock").remove(pubkey).is_some();
        self.notify();
        removed
    }

    /// The keys (loading or ready) that `source` gave.
    pub fn held_from(&self, source: &str) -> Vec<Held> {
        self.entries
            .read()
            .expect("registry lock")
            .iter()
            .filter(|(_, e)| !matches!(e, Entry::Failed { .. }) && &*e.origin().source == source)
            .map(|(pk, e)| Held {
                pubkey: *pk,
                origin: e.origin().clone(),
                ready: matches!(e, Entry::Ready { .. }),
            })
            .collect()
    }

    /// Whether the key is loaded or being unlocked here (not counting sources still listed).
    pub fn holds(&self, pubkey: &PublicKey) -> bool {
        matches!(
            self.entries.read().expect("registry lock").get(pubkey),
            Some(Entry::Ready { .. } | Entry::Loading { .. })
        )
    }

    pub fn lookup(&self, pubkey: &PublicKey) -> Lookup {
        match self.entries.read().expect("registry lock").get(pubkey) {
            Some(Entry::Ready { key, .. }) => Lookup::Ready(key.clone()),
            Some(Entry::Loading { .. }) => Lookup::Loading,
            Some(Entry::Failed { reason, .. }) => Lookup::Failed(reason.clone()),
            None if self.any_source_pending() => Lookup::Loading,
            None => Lookup::Unknown,
        }
    }

    /// Like `lookup`, but waits up to `patience` for a key that is still being unlocked (or
    /// may yet come from a source still being listed).
    pub async fn wait_for(&self, pubkey: &PublicKey, patience: Duration) -> Lookup {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            rx.borrow_and_update();
            match self.lookup(pubkey) {
                Lookup::Loading => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Lookup::Loading;
            }
        }
    }

    /// Pubkeys that can sign now, sorted.
    pub fn ready_pubkeys(&self) -> Vec<PublicKey> {
        let mut v: Vec<_> = self
            .entries
            .read()
            .expect("registry lock")
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Ready { .. }))
            .map(|(pk, _)| *pk)
            .collect();
        v.sort();
        v
    }

    /// Pubkeys that can sign now or will once unlocked, sorted.
    pub fn known_pubkeys(&self) -> Vec<PublicKey> {
        let mut v: Vec<_> = self
            .entries
            .read()
            .expect("registry lock")
            .iter()
            .filter(|(_, e)| !matches!(e, Entry::Failed { .. }))
            .map(|(pk, _)| *pk)
            .collect();
        v.sort();
        v
    }

    /// Where a key came from (keystore file, key definition, Key Manager import, store).
    pub fn origin(&self, pubkey: &PublicKey) -> Option<Arc<Origin>> {
        self.entries
            .read()
            .expect("registry lock")
            .get(pubkey)
            .map(|e| e.origin().clone())
    }

    pub fn counts(&self) -> KeyCounts {
        let map = self.entries.read().expect("registry lock");
        let mut c = KeyCounts::default();
        for e in map.values() {
            match e {
                Entry::Loading { .. } => c.loading += 1,
                Entry::Ready { .. } => c.loaded += 1,
                Entry::Failed { .. } => c.failed += 1,
            }
        }
        c.failed += self.anonymous_failures.read().expect("registry lock").len();
        c.stale = self.stale.read().expect("registry lock").len();
        c
    }

    /// Whether `source` reported a failure (a key it should give is missing).
    pub fn has_failures(&self, source: &str) -> bool {
        self.anonymous_failures
            .read()
            .expect("registry lock")
            .iter()
            .any(|(s, _)| &**s == source)
            || self
                .entries
                .read()
                .expect("registry lock")
                .values()
                .any(|e| matches!(e, Entry::Failed { .. }) && &*e.origin().source == source)
    }

    /// Units that could not be read again, whose keys stay loaded, for `/healthcheck`.
    pub fn stale_units(&self) -> Vec<LoadFailure> {
        let mut v: Vec<LoadFailure> = self
            .stale
            .read()
            .expect("registry lock")
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        v.sort_by(|a, b| a.origin.cmp(&b.origin));
        v
    }

    /// Every failure with its reason, for `/healthcheck`.
    pub fn failures(&self) -> Vec<LoadFailure> {
        let mut v: Vec<LoadFailure> = self
            .entries
            .read()
            .expect("registry lock")
            .iter()
            .filter_map(|(pk, e)| match e {
                Entry::Failed { reason, origin } => Some(LoadFailure {
                    origin: format!("{origin} ({pk})"),
                    reason: reason.to_string(),
                }),
                _ => None,
            })
            .collect();
        v.extend(
            self.anonymous_failures
                .read()
                .expect("registry lock")
                .iter()
                .map(|(_, f)| f.clone()),
        );
        v.sort_by(|a, b| a.origin.cmp(&b.origin));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn key(i: u8) -> Arc<dyn SigningKey> {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        b[31] = i + 1;
        Arc::new(SecretKey::from_bytes(&b).unwrap())
    }

    #[tokio::test]
    async fn loading_key_becomes_ready_for_a_waiter() {
        let reg = Arc::new(KeyRegistry::new());
        let k = key(1);
        let pk = k.public_key();
        let a = Origin::memory("a.json");
        assert!(reg.announce(pk, &a));
        assert!(matches!(reg.lookup(&pk), Lookup::Loading));
        let r2 = reg.clone();
        let waiter =
            tokio::spawn(async move { matches!(r2.wait_for(&pk, Duration::from_secs(5)).await, Lookup::Ready(_)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(reg.insert_ready(k, &a, true));
        assert!(waiter.await.unwrap());
        assert_eq!(
            reg.counts(),
            KeyCounts {
                loaded: 1,
                loading: 0,
                failed: 0,
                stale: 0
            }
        );
    }

    #[tokio::test]
    async fn waiting_gives_up_after_patience() {
        let reg = KeyRegistry::new();
        let pk = key(2).public_key();
        reg.announce(pk, &Origin::memory("b.json"));
        let t = std::time::Instant::now();
        assert!(matches!(
            reg.wait_for(&pk, Duration::from_millis(50)).await,
            Lookup::Loading
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn an_unknown_key_waits_while_a_source_is_listed() {
        let reg = Arc::new(KeyRegistry::new());
        let k = key(4);
        let pk = k.public_key();
        reg.sources_pending(1);
        assert!(matches!(reg.lookup(&pk), Lookup::Loading));
        let r2 = reg.clone();
        let waiter =
            tokio::spawn(async move { matches!(r2.wait_for(&pk, Duration::from_secs(5)).await, Lookup::Ready(_)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(reg.insert_ready(k, &Origin::memory("store"), false));
        reg.source_listed();
        assert!(waiter.await.unwrap());
        assert!(matches!(reg.lookup(&key(5).public_key()), Lookup::Unknown));
    }

    #[test]
    fn duplicates_failures_and_no_resurrection() {
        let reg = KeyRegistry::new();
        let pk = key(3).public_key();
        assert!(reg.insert_ready(key(3), &Origin::memory("first.json"), false));
        assert!(!reg.insert_ready(key(3), &Origin::memory("second.json"), false));
        let third = Origin::memory("third.json");
        assert!(!reg.announce(pk, &third));
        reg.fail(Some(pk), &third, "wrong password".into());
        assert!(
            matches!(reg.lookup(&pk), Lookup::Ready(_)),
            "a failure replaced a loaded key"
        );
        reg.fail(None, &Origin::memory("broken.json"), "not JSON".into());
        assert_eq!(reg.counts().failed, 1);
        assert_eq!(reg.failures()[0].origin, "broken.json");
        reg.clear_failures("memory");
        assert_eq!(reg.counts().failed, 0);
        assert!(reg.remove(&pk));
        assert!(matches!(reg.lookup(&pk), Lookup::Unknown));
        // Announced, then deleted while unlocking: the late key does not come back.
        let o = Origin::memory("late.json");
        assert!(reg.announce(pk, &o));
        assert!(reg.remove(&pk));
        assert!(!reg.insert_ready(key(3), &o, true));
        assert!(matches!(reg.lookup(&pk), Lookup::Unknown));
    }
}
