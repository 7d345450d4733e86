//! Loading keys from every source, at startup and on reload, as one procedure:
//!
//! 1. list the sources (I/O; each `KeySource`), concurrently;
//! 2. prepare (brief, under the change lock): record each source's failures, parse the keys
//!    whose pubkey is not declared (hex: cheap), drop the keys a source no longer gives (refused
//!    from that moment), announce the new declared ones (`Loading`);
//! 3. unlock what is new on the CPU pool (the KDFs: the slow part) and install it.
//!
//! A source that cannot be listed keeps every key it gave; a file or secret that cannot be
//! read keeps the keys it gave (reported as stale, not as missing): a reload never
//! half-applies a half-written file or drops keys because a store is down. Keys already loaded
//! are not unlocked again (but for keystores that do not declare their pubkey), and take the
//! origin their source gives them now (a changed signing policy applies).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::handle::SigningKey;
use super::origin::Origin;
use super::registry::KeyRegistry;
use super::source::{Failure, Found, KeySource, Material, Pending, SourceError};
use crate::types::PublicKey;

/// What a load or reload did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadReport {
    pub added: Vec<Change>,
    pub removed: Vec<Change>,
    pub failed: Vec<Failed>,
    /// Keys that were loaded before and still are.
    pub unchanged: usize,
    #[serde(skip)]
    pub elapsed: Duration,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    pub pubkey: PublicKey,
    pub source: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Failed {
    pub source: String,
    pub reason: String,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.failed.extend(other.failed);
        self.unchanged += other.unchanged;
    }
}

/// Which cores unlock keys: at startup all of them; on a reload half, so that signing for the
/// keys already loaded keeps its CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    All,
    Half,
}

/// Work left after `prepare`: the keys to unlock.
pub struct Prepared {
    unlock: Vec<(Pending, bool)>,
    report: LoadReport,
}

pub struct KeyLoader {
    registry: Arc<KeyRegistry>,
    sources: Vec<Arc<dyn KeySource>>,
    /// Held while a load decides what changes, and by the Key Manager while it changes keys:
    /// a load's picture of a source never goes stale under it.
    pub changes: Arc<tokio::sync::Mutex<()>>,
    reloading: AtomicBool,
    half: Arc<rayon::ThreadPool>,
}

/// Progress lines for large loads.
struct Progress {
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    start: Instant,
}

impl Progress {
    fn tick(&self, failed: bool) {
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let step = (self.total / 10).max(1);
        if self.total >= 20 && n.is_multiple_of(step) && n < self.total {
            let elapsed = self.start.elapsed();
            let left = elapsed.mul_f64((self.total - n) as f64 / n as f64);
            tracing::info!(
                "unlocked {n}/{} keys ({}%), {} failed, {:.1}s elapsed, ~{:.0}s left",
                self.total,
                n * 100 / self.total,
                self.failed.load(Ordering::Relaxed),
                elapsed.as_secs_f64(),
                left.as_secs_f64()
            );
        }
    }
}

impl KeyLoader {
    pub fn new(registry: Arc<KeyRegistry>, sources: Vec<Arc<dyn KeySource>>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let half = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads((cores / 2).max(1))
                .thread_name(|i| format!("key-reload-{i}"))
                .build()
                .expect("a thread pool"),
        );
        KeyLoader {
            registry,
            sources,
            changes: Arc::new(tokio::sync::Mutex::new(())),
            reloading: AtomicBool::new(false),
            half,
        }
    }

    pub fn registry(&self) -> &Arc<KeyRegistry> {
        &self.registry
    }

    pub fn sources(&self) -> &[Arc<dyn KeySource>] {
        &self.sources
    }

    /// The sources listed over the network.
    pub fn remote_sources(&self) -> Vec<Arc<dyn KeySource>> {
        self.sources.iter().filter(|s| s.remote()).cloned().collect()
    }

    pub fn local_sources(&self) -> Vec<Arc<dyn KeySource>> {
        self.sources.iter().filter(|s| !s.remote()).cloned().collect()
    }

    pub fn reloading(&self) -> bool {
        self.reloading.load(Ordering::SeqCst)
    }

    /// A full reload of every source, unless one is running (`None` then).
    pub async fn reload(&self) -> Option<LoadReport> {
        if self.reloading.swap(true, Ordering::SeqCst) {
            return None;
        }
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.reloading);
        let sources = self.sources.clone();
        let report = self.load(&sources, Cores::Half).await;
        log_report("reload", &report);
        Some(report)
    }

    /// Lists, prepares and unlocks `sources`.
    pub async fn load(&self, sources: &[Arc<dyn KeySource>], cores: Cores) -> LoadReport {
        let start = Instant::now();
        let prepared = self.list_and_prepare(sources).await;
        let mut report = self.unlock(prepared, cores).await;
        report.elapsed = start.elapsed();
        report
    }

    /// Steps 1 and 2; the caller runs `unlock` (startup: after it starts listening).
    pub async fn list_and_prepare(&self, sources: &[Arc<dyn KeySource>]) -> Prepared {
        let list = |which: Vec<Arc<dyn KeySource>>| {
            futures::future::join_all(which.into_iter().map(|s| async move {
                let listing = s.list().await;
                (s, listing)
            }))
        };
        // Secret stores may take seconds to list: without the lock. Local sources (the Key
        // Manager writes to two of them) under it, so that no import or deletion falls between
        // their listing and what is decided from it.
        let mut listed = list(sources.iter().filter(|s| s.remote()).cloned().collect()).await;
        let _changes = self.changes.lock().await;
        listed.extend(list(sources.iter().filter(|s| !s.remote()).cloned().collect()).await);
        let registry = self.registry.clone();
        // Parsing hex keys and deriving their pubkeys is cheap, but not free for thousands:
        // off the async workers.
        tokio::task::spawn_blocking(move || prepare(&registry, listed))
            .await
            .expect("preparing a key load")
    }

    /// Step 3: unlocks what `prepare` left, installing each key as soon as it is ready.
    pub async fn unlock(&self, prepared: Prepared, cores: Cores) -> LoadReport {
        let Prepared { unlock, mut report } = prepared;
        if unlock.is_empty() {
            return report;
        }
        let registry = self.registry.clone();
        let progress = Progress {
            total: unlock.len(),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            start: Instant::now(),
        };
        tracing::info!(keys = progress.total, ?cores, "unlocking keys");
        let work = move || -> LoadReport {
            let results: Vec<LoadReport> = unlock
                .into_par_iter()
                .with_max_len(1)
                .map(|(pending, announced)| {
                    let mut r = LoadReport::default();
                    // A key that panics its decryption fails alone; it never stays `Loading`.
                    let unlocked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pending.unlock()))
                        .unwrap_or_else(|_| {
                            Err(super::source::UnlockError::Secret("unlocking the key panicked".into()))
                        });
                    match unlocked {
                        Ok(keys) => {
                            for key in keys {
                                let pubkey = key.public_key();
                                if registry.insert_ready(key, &pending.origin, announced) {
                                    r.added.push(Change {
                                        pubkey,
                                        source: pending.origin.label.clone(),
                                    });
                                } else if registry.holds(&pubkey) {
                                    duplicate(&registry, pubkey, &pending.origin);
                                }
                            }
                            progress.tick(false);
                        }
                        Err(reason) => {
                            tracing::error!(source = %pending.origin, %reason, "key failed to load");
                            registry.fail(pending.declared, &pending.origin, reason.to_string());
                            r.failed.push(Failed {
                                source: pending.origin.label.clone(),
                                reason: reason.to_string(),
                            });
                            progress.tick(true);
                        }
                    }
                    r
                })
                .collect();
            let mut all = LoadReport::default();
            for r in results {
                all.merge(r);
            }
            all
        };
        let unlocked = match cores {
            // Off the async workers, on rayon's global pool: every core.
            Cores::All => tokio::task::spawn_blocking(work).await,
            Cores::Half => {
                let half = self.half.clone();
                tokio::task::spawn_blocking(move || half.install(work)).await
            }
        }
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "unlocking keys stopped");
            LoadReport::default()
        });
        report.merge(unlocked);
        report
    }
}

/// What step 2 decided for one source before anything is added.
struct SourcePlan {
    held_keys: HashSet<PublicKey>,
    cheap_ready: Vec<(Arc<Origin>, Arc<dyn SigningKey>)>,
    slow: Vec<Pending>,
}

/// Step 2 (blocking): decides, for every listed source, what is removed, kept, announced and
/// left to unlock. Removals for every source come before any addition, so that a key that
/// moved from one source to another is dropped by the first and taken by the second.
fn prepare(registry: &KeyRegistry, listed: Vec<(Arc<dyn KeySource>, Result<Found, SourceError>)>) -> Prepared {
    let mut report = LoadReport::default();
    let plans: Vec<SourcePlan> = listed
        .into_iter()
        .filter_map(|(source, listing)| plan_source(registry, &source, listing, &mut report))
        .collect();
    let unlock = install(registry, plans, &mut report);
    Prepared { unlock, report }
}

/// One source's plan: its failures recorded, the keys it no longer holds removed, its cheap
/// keys unlocked, its keystores left for later; `None` when it could not be read (its keys
/// stay).
fn plan_source(
    registry: &KeyRegistry,
    source: &Arc<dyn KeySource>,
    listing: Result<Found, SourceError>,
    report: &mut LoadReport,
) -> Option<SourcePlan> {
    let name = source.name().clone();
    registry.clear_failures(&name);
    let found = match listing {
        Ok(f) => f,
        Err(e) => {
            // Nothing known about the source now: every key it gave stays. With none, its
            // keys are missing: a failure; with some, they are stale.
            tracing::error!(source = %name, error = %e, "key source could not be read; keeping the keys it gave before");
            if registry.held_from(&name).is_empty() {
                let whole = Origin::new(&name, "", name.to_string(), super::OriginKind::Definition, None);
                registry.fail(None, &whole, e.to_string());
            } else {
                registry.stale(&name, name.to_string(), e.to_string());
            }
            report.failed.push(Failed {
                source: name.to_string(),
                reason: e.to_string(),
            });
            return None;
        }
    };
    let held = registry.held_from(&name);
    let held_keys: HashSet<PublicKey> = held.iter().map(|h| h.pubkey).collect();
    let held_units: HashSet<&str> = held.iter().map(|h| h.origin.unit.as_str()).collect();
    let mut kept_units: HashSet<String> = found.keep.iter().cloned().collect();
    for f in &found.failures {
        let stale = f.unit.as_deref().is_some_and(|u| held_units.contains(u));
        record_failure(registry, &name, f, stale, report);
        if let Some(u) = &f.unit {
            kept_units.insert(u.clone());
        }
    }

    // What the source gives now: declared pubkeys, and the keys of cheap material.
    let mut wanted: HashSet<PublicKey> = HashSet::new();
    let mut cheap_ready = Vec::new();
    let mut slow = Vec::new();
    for p in found.keys {
        match (&p.declared, &p.material) {
            (Some(pk), _) => {
                wanted.insert(*pk);
                slow.push(p);
            }
            (None, Material::Raw(_) | Material::Secret(_) | Material::Ready(_)) => match p.unlock() {
                Ok(keys) => {
                    for k in keys {
                        wanted.insert(k.public_key());
                        cheap_ready.push((p.origin.clone(), k));
                    }
                }
                Err(reason) => {
                    kept_units.insert(p.origin.unit.clone());
                    let stale = held_units.contains(p.origin.unit.as_str());
                    record_failure(
                        registry,
                        &name,
                        &Failure {
                            label: p.origin.label.clone(),
                            reason: reason.to_string(),
                            unit: Some(p.origin.unit.clone()),
                            pubkey: None,
                            origin: Some(p.origin.clone()),
                        },
                        stale,
                        report,
                    );
                }
            },
            // A keystore without a pubkey: known only after its KDF; its unit's keys
            // stay until then.
            (None, Material::Keystore { .. }) => {
                kept_units.insert(p.origin.unit.clone());
                slow.push(p);
            }
        }
    }

    // Gone from the source (and not covered by a unit that failed to read): refused now.
    for h in &held {
        if !wanted.contains(&h.pubkey) && !kept_units.contains(&h.origin.unit) && registry.remove(&h.pubkey) {
            tracing::info!(pubkey = %h.pubkey, source = %h.origin, "key removed: its source no longer holds it");
            report.removed.push(Change {
                pubkey: h.pubkey,
                source: h.origin.label.clone(),
            });
        }
    }
    Some(SourcePlan {
        held_keys,
        cheap_ready,
        slow,
    })
}

/// Adds what the plans give: cheap keys installed now, keystores announced (requests wait for
/// them); what is left to unlock in step 3.
fn install(registry: &KeyRegistry, plans: Vec<SourcePlan>, report: &mut LoadReport) -> Vec<(Pending, bool)> {
    let mut unlock = Vec::new();
    for plan in plans {
        // The first definition of a key in the source's order gives it its origin; a later one
        // (another file of the same folder) is a duplicate whose policy also applies.
        let mut seen = HashSet::new();
        // Cheap keys: installed now (those already loaded stay as they are).
        for (origin, key) in plan.cheap_ready {
            let pubkey = key.public_key();
            if !seen.insert(pubkey) {
                duplicate(registry, pubkey, &origin);
                continue;
            }
            if plan.held_keys.contains(&pubkey) && registry.holds(&pubkey) {
                registry.update_origin(&pubkey, &origin);
                report.unchanged += 1;
                continue;
            }
            if registry.insert_ready(key, &origin, false) {
                report.added.push(Change {
                    pubkey,
                    source: origin.label.clone(),
                });
            } else {
                duplicate(registry, pubkey, &origin);
            }
        }
        // Keystores: announced now (requests wait for them), unlocked in step 3.
        for p in plan.slow {
            match p.declared {
                Some(pk) if !seen.insert(pk) => duplicate(registry, pk, &p.origin),
                Some(pk) if plan.held_keys.contains(&pk) && registry.holds(&pk) => {
                    registry.update_origin(&pk, &p.origin);
                    report.unchanged += 1
                }
                Some(pk) => {
                    if !registry.announce(pk, &p.origin) {
                        duplicate(registry, pk, &p.origin);
                        continue;
                    }
                    unlock.push((p, true));
                }
                None => unlock.push((p, false)),
            }
        }
    }
    unlock
}

/// A second definition of a loaded key: the key stays loaded from the first, and the policies
/// of both apply (a definition can only narrow what is signed, never widen it).
fn duplicate(registry: &KeyRegistry, pubkey: PublicKey, origin: &Arc<Origin>) {
    let kept = registry.origin(&pubkey).map(|o| o.label.clone()).unwrap_or_default();
    registry.also_defined(pubkey, origin);
    tracing::warn!(source = %origin, %pubkey, kept = %kept,
        "key is defined more than once: loaded from the first definition, signing only what every definition allows");
}

/// Records a failure of `source`: `stale` when the unit's keys stay loaded as before.
fn record_failure(registry: &KeyRegistry, source: &Arc<str>, f: &Failure, stale: bool, report: &mut LoadReport) {
    if stale {
        tracing::warn!(source = %f.label, reason = %f.reason, "cannot read this again; its keys stay loaded as they were");
        registry.stale(source, f.label.clone(), f.reason.clone());
    } else {
        tracing::error!(source = %f.label, reason = %f.reason, "key failed to load");
        let origin = f.origin.clone().unwrap_or_else(|| {
            Origin::new(
                source,
                f.unit.clone().unwrap_or_default(),
                f.label.clone(),
                super::OriginKind::Definition,
                None,
            )
        });
        registry.fail(f.pubkey, &origin, f.reason.clone());
    }
    report.failed.push(Failed {
        source: f.label.clone(),
        reason: f.reason.clone(),
    });
}

/// One summary line for a load, and one line per change (operators grep for a pubkey).
pub fn log_report(what: &str, r: &LoadReport) {
    tracing::info!(
        added = r.added.len(),
        removed = r.removed.len(),
        failed = r.failed.len(),
        unchanged = r.unchanged,
        "{what} of keys done in {:.2}s",
        r.elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::registry::Lookup;
    use crate::keys::sources::definitions::LocalDefinitions;
    use crate::keys::sources::folder::{KeystoreFolder, Passwords};

    const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-keys/interop");

    fn interop(i: usize) -> (PublicKey, String) {
        let keys: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{INTEROP}/keys.json")).unwrap()).unwrap();
        let k = &keys["keys"][i];
        (
            k["pubkey"].as_str().unwrap().parse().unwrap(),
            k["secret_key"].as_str().unwrap().to_string(),
        )
    }

    fn origin_source(reg: &KeyRegistry, pk: &PublicKey) -> String {
        reg.origin(pk).unwrap().source.to_string()
    }

    /// A key moves from a keystore folder to a YAML definition: the reload drops it from the
    /// first and takes it from the second, never leaving it out; a broken file keeps its key.
    #[tokio::test]
    async fn reloads_follow_the_sources() {
        let dir = tempfile::tempdir().unwrap();
        let (ks, defs) = (dir.path().join("ks"), dir.path().join("defs"));
        std::fs::create_dir_all(&ks).unwrap();
        std::fs::create_dir_all(&defs).unwrap();
        for i in 0..2 {
            std::fs::copy(format!("{INTEROP}/keystore-{i}.json"), ks.join(format!("k{i}.json"))).unwrap();
        }
        let password = Arc::new(zeroize::Zeroizing::new("interop-test-password".to_string()));
        let folder: Arc<dyn KeySource> = Arc::new(KeystoreFolder::new(
            "folder",
            ks.clone(),
            Passwords::Shared(password),
            false,
        ));
        let yaml: Arc<dyn KeySource> = Arc::new(LocalDefinitions::new(defs.clone()));
        let reg = Arc::new(KeyRegistry::new());
        let loader = KeyLoader::new(reg.clone(), vec![folder.clone(), yaml.clone()]);
        let first = loader.reload().await.unwrap();
        assert_eq!((first.added.len(), first.removed.len(), first.failed.len()), (2, 0, 0));
        let (pk0, sk0) = interop(0);
        let (pk1, _) = interop(1);
        assert_eq!(origin_source(&reg, &pk0), "folder");

        // Key 0 moves to a definition; key 1's keystore is rewritten and caught half way.
        std::fs::remove_file(ks.join("k0.json")).unwrap();
        std::fs::write(defs.join("k0.yaml"), format!("type: file-raw\nprivateKey: \"{sk0}\"\n")).unwrap();
        let full = std::fs::read_to_string(ks.join("k1.json")).unwrap();
        std::fs::write(ks.join("k1.json"), &full[..full.len() / 3]).unwrap();
        let second = loader.reload().await.unwrap();
        assert!(matches!(reg.lookup(&pk0), Lookup::Ready(_)));
        assert_eq!(origin_source(&reg, &pk0), yaml.name().to_string());
        assert!(
            matches!(reg.lookup(&pk1), Lookup::Ready(_)),
            "a half-written file dropped its key"
        );
        assert_eq!(second.failed.len(), 1, "{second:?}");
        assert_eq!(second.removed.len(), 1, "{second:?}");
        assert_eq!(second.added.len(), 1, "{second:?}");

        // Written in full again: nothing unlocked again, nothing failed.
        std::fs::write(ks.join("k1.json"), &full).unwrap();
        let third = loader.reload().await.unwrap();
        assert_eq!(
            (
                third.added.len(),
                third.removed.len(),
                third.failed.len(),
                third.unchanged
            ),
            (0, 0, 0, 2)
        );
        assert_eq!(reg.counts().failed, 0);
    }
}
