//! Slashing protection against a real PostgreSQL (started by the tests) and a real SQLite
//! file: one suite, both backends.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade::protection::rules::Verdict;
use palisade::protection::{
    DbOptions, Interchange, ProtectionError, Recorded, Refusal, SlashableMessage, SlashingDatabase, Watermarks,
};
use palisade::types::{PublicKey, Root, SigningRoot};
use serde_json::Value;

use testkit::proposals::{att, block, in_export, pk, root, slashable};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

const BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

/// A fresh, empty database; the guard keeps a SQLite file alive.
async fn fresh(backend: Backend) -> (SlashingDatabase, Option<tempfile::TempDir>) {
    fresh_with(backend, DbOptions::default()).await
}

async fn fresh_with(backend: Backend, opts: DbOptions) -> (SlashingDatabase, Option<tempfile::TempDir>) {
    match backend {
        Backend::Postgres => {
            let url = testkit::pg::shared().new_database();
            (SlashingDatabase::open(&url, &opts).await.unwrap(), None)
        }
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("p.sqlite").display());
            (SlashingDatabase::open(&url, &opts).await.unwrap(), Some(dir))
        }
    }
}

// ------------------------------------------------------------ EIP-3076 interchange tests

fn interchange_tests() -> Vec<(String, Value)> {
    let dir = testkit::data_dir().join("eip3076-interchange-tests/tests/generated");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            (f.file_stem().unwrap().to_string_lossy().to_string(), v)
        })
        .collect()
}

fn parse_root(v: &Value) -> SigningRoot {
    v.as_str().map(|s| s.parse().unwrap()).unwrap_or(SigningRoot([0; 32]))
}

async fn run_interchange_test(backend: Backend, name: &str, test: &Value) {
    let (db, _guard) = fresh(backend).await;
    let gvr: Root = test["genesis_validators_root"].as_str().unwrap().parse().unwrap();
    db.pin_chain(gvr).await.unwrap();
    for (i, step) in test["steps"].as_array().unwrap().iter().enumerate() {
        let expect_ok = step["should_succeed"].as_bool().unwrap();
        let result = match Interchange::from_json(&step["interchange"].to_string()) {
            Ok(interchange) => db.import(&interchange).await.map(|_| ()),
            Err(e) => Err(ProtectionError::InvalidInterchange(e)),
        };
        assert_eq!(
            result.is_ok(),
            expect_ok,
            "{backend:?} {name} step {i}: import gave {result:?}"
        );
        for b in step["blocks"].as_array().unwrap() {
            let pubkey: PublicKey = b["pubkey"].as_str().unwrap().parse().unwrap();
            let p = SlashableMessage::Block {
                slot: b["slot"].as_str().unwrap().parse().unwrap(),
                root: parse_root(&b["signing_root"]),
            };
            let r = db
                .check_and_record(&pubkey, &p, "interchange-test")
                .await
                .map(|c| c.recorded);
            let expect = b["should_succeed"].as_bool().unwrap();
            assert_eq!(r.is_ok(), expect, "{backend:?} {name} step {i}: block {b} gave {r:?}");
            if !expect {
                assert!(matches!(r, Err(ProtectionError::Refused(_))), "{r:?}");
            }
        }
        for a in step["attestations"].as_array().unwrap() {
            let pubkey: PublicKey = a["pubkey"].as_str().unwrap().parse().unwrap();
            let p = SlashableMessage::Attestation {
                source: a["source_epoch"].as_str().unwrap().parse().unwrap(),
                target: a["target_epoch"].as_str().unwrap().parse().unwrap(),
                root: parse_root(&a["signing_root"]),
            };
            let r = db
                .check_and_record(&pubkey, &p, "interchange-test")
                .await
                .map(|c| c.recorded);
            let expect = a["should_succeed"].as_bool().unwrap();
            assert_eq!(
                r.is_ok(),
                expect,
                "{backend:?} {name} step {i}: attestation {a} gave {r:?}"
            );
            if !expect {
                assert!(
                    matches!(r, Err(ProtectionError::Refused(_))),
                    "{backend:?} {name}: {r:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eip3076_interchange_tests_pass_strictly() {
    let tests = interchange_tests();
    assert_eq!(tests.len(), 38);
    for backend in BACKENDS {
        for (name, test) in &tests {
            run_interchange_test(backend, name, test).await;
        }
    }
}

// ------------------------------------------------------------ exhaustive model check

/// The reference: slashability computed from the full list of what was signed.
#[derive(Default)]
struct Model {
    blocks: Vec<(u64, SigningRoot)>,
    atts: Vec<(u64, u64, SigningRoot)>,
}

fn same(a: SigningRoot, b: SigningRoot) -> bool {
    !a.is_zero() && a == b
}

impl Model {
    fn slashable(&self, p: &SlashableMessage) -> bool {
        match *p {
            SlashableMessage::Block { slot, root } => self.blocks.iter().any(|&(s, r)| s == slot.0 && !same(r, root)),
            SlashableMessage::Attestation { source, target, root } => {
                let (s, t) = (source.0, target.0);
                s > t
                    || self.atts.iter().any(|&(s2, t2, r2)| {
                        (t == t2 && !same(r2, root)) // double vote
                            || (s < s2 && t2 < t) // surrounds
                            || (s2 < s && t < t2) // surrounded
                    })
            }
        }
    }

    fn signed_before(&self, p: &SlashableMessage) -> bool {
        match *p {
            SlashableMessage::Block { slot, root } => self.blocks.contains(&(slot.0, root)),
            SlashableMessage::Attestation { source, target, root } => self.atts.contains(&(source.0, target.0, root)),
        }
    }

    fn add(&mut self, p: &SlashableMessage) {
        match *p {
            SlashableMessage::Block { slot, root } => self.blocks.push((slot.0, root)),
            SlashableMessage::Attestation { source, target, root } => self.atts.push((source.0, target.0, root)),
        }
    }
}

fn sequences(options: &[SlashableMessage], len: usize) -> Vec<Vec<SlashableMessage>> {
    let mut out = vec![vec![]];
    for _ in 0..len {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |o| {
                    let mut p = prefix.clone();
                    p.push(*o);
                    p
                })
            })
            .collect();
    }
    out
}

/// Runs one sequence on its own validator. Asserts that the database agrees with the
/// minimal rule kept in memory, and that nothing slashable is ever signed.
async fn run_sequence(db: &SlashingDatabase, id: u64, seq: &[SlashableMessage]) {
    let key = pk(id);
    let mut rule = Watermarks {
        enabled: true,
        ..Default::default()
    };
    let mut model = Model::default();
    for p in seq {
        let got = db.check_and_record(&key, p, "model").await.map(|c| c.recorded);
        let want = rule.check(p);
        match (&got, want) {
            (Ok(Recorded::New), Verdict::New) => rule.record(p),
            (Ok(Recorded::Repeat), Verdict::Repeat) => {
                assert!(model.signed_before(p), "repeat of something never signed: {seq:?}");
            }
            (Err(ProtectionError::Refused(_)), Verdict::Refused(_)) => {}
            _ => panic!("database said {got:?}, the rule says {want:?}, sequence {seq:?} at {p:?}"),
        }
        if got.is_ok() {
            assert!(!model.slashable(p), "signed a slashable message: {p:?} after {seq:?}");
            model.add(p);
        }
    }
}

async fn run_all(db: Arc<SlashingDatabase>, seqs: Vec<Vec<SlashableMessage>>, first_id: u64) {
    let seqs = Arc::new(seqs);
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let db = db.clone();
        let seqs = seqs.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < seqs.len() {
                run_sequence(&db, first_id + i as u64, &seqs[i]).await;
                i += workers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn attestation_options(max_epoch: u64, roots: &[u64], allow_inverted: bool) -> Vec<SlashableMessage> {
    let mut v = Vec::new();
    for s in 0..=max_epoch {
        for t in 0..=max_epoch {
            if s > t && !allow_inverted {
                continue;
            }
            for &r in roots {
                v.push(att(s, t, r));
            }
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustive_sequences_never_sign_anything_slashable() {
    // Attestations over epochs 0..=2 with two roots (and source > target): every sequence of
    // up to 3; every sequence of 4 without the always-refused inverted ones. Blocks over
    // slots 0..=2 with two roots: every sequence of up to 4. A zero root is one of the roots
    // for blocks, since it never equals anything.
    let atts3 = attestation_options(2, &[1, 2], true);
    let atts4 = attestation_options(2, &[1, 2], false);
    let blocks: Vec<SlashableMessage> = (0..=2).flat_map(|s| [block(s, 0), block(s, 1), block(s, 2)]).collect();
    let mut seqs = Vec::new();
    for len in 1..=3 {
        seqs.extend(sequences(&atts3, len));
    }
    seqs.extend(sequences(&atts4, 4));
    for len in 1..=4 {
        seqs.extend(sequences(&blocks, len));
    }
    let total = seqs.len();
    for backend in BACKENDS {
        let (db, _guard) = fresh(backend).await;
        let start = std::time::Instant::now();
        run_all(Arc::new(db), seqs.clone(), 0).await;
        eprintln!(
            "{backend:?}: {total} sequences checked in {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
}

// ------------------------------------------------------------ concurrency (PostgreSQL)

/// Two handles on one fresh PostgreSQL database, each with its own pool, like two replicas.
async fn two_pg_replicas() -> (Arc<SlashingDatabase>, Arc<SlashingDatabase>) {
    let url = testkit::pg::shared().new_database();
    let opts = DbOptions {
        pool_size: 8,
        ..Default::default()
    };
    let a = Arc::new(SlashingDatabase::open(&url, &opts).await.unwrap());
    let b = Arc::new(SlashingDatabase::open(&url, &opts).await.unwrap());
    (a, b)
}

/// Many tasks over two pools (like two replicas) race conflicting messages for one
/// validator; in every conflicting set exactly one wins, and every win is in the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conflicting_messages_exactly_one_wins() {
    let (a, b) = two_pg_replicas().await;
    a.pin_chain(Root::ZERO).await.unwrap();
    let key = pk(7);
    a.check_and_record(&key, &att(0, 1, 1), "setup")
        .await
        .map(|c| c.recorded)
        .unwrap();

    let mut winners: Vec<SlashableMessage> = Vec::new();
    for round in 0..20u64 {
        let base = 10 * round + 1; // watermark is (base-1 or so, base)
        // Double votes at one target, a surrounding and a surrounded vote, and blocks at
        // one slot with different roots.
        let mut candidates = Vec::new();
        for r in 0..8 {
            candidates.push(att(base + 1, base + 4, 100 + r)); // A, surrounds B
            candidates.push(att(base + 2, base + 3, 200 + r)); // B
        }
        let blocks: Vec<SlashableMessage> = (0..16).map(|r| block(round, 300 + r)).collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(candidates.len() + blocks.len()));
        let mut tasks = Vec::new();
        for (i, p) in candidates.iter().chain(&blocks).enumerate() {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            let p = *p;
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (p, db.check_and_record(&key, &p, "race").await.map(|c| c.recorded))
            }));
        }
        let mut att_wins = Vec::new();
        let mut block_wins = Vec::new();
        for t in tasks {
            let (p, r) = t.await.unwrap();
            match r {
                Ok(Recorded::New) => match p {
                    SlashableMessage::Block { .. } => block_wins.push(p),
                    SlashableMessage::Attestation { .. } => att_wins.push(p),
                },
                Ok(Recorded::Repeat) => panic!("no candidate repeats another"),
                Err(ProtectionError::Refused(_)) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(att_wins.len(), 1, "round {round}: attestation winners {att_wins:?}");
        assert_eq!(block_wins.len(), 1, "round {round}: block winners {block_wins:?}");
        winners.extend(att_wins);
        winners.extend(block_wins);
    }

    let export = a.export(Some(&[key])).await.unwrap();
    for w in &winners {
        assert!(
            in_export(&export, &key, w),
            "{w:?} was approved but is not in the export"
        );
    }
}

/// An import landing while replicas sign the same validators (the operator moves keys in from
/// another signer, online). No deadlock or error; nothing signed is slashable against anything
/// else signed; once the import has returned nothing conflicting with what it brought is signed;
/// every signature given is in the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_import_while_replicas_sign() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for backend in BACKENDS {
        let (a, b, _g) = match backend {
            Backend::Postgres => {
                let (a, b) = two_pg_replicas().await;
                (a, b, None)
            }
            // One process per SQLite file: the "replicas" share it.
            Backend::Sqlite => {
                let (db, g) = fresh(backend).await;
                let db = Arc::new(db);
                (db.clone(), db, g)
            }
        };
        a.pin_chain(Root::ZERO).await.unwrap();
        let keys: Vec<PublicKey> = (0..12).map(|i| pk(500 + i)).collect();
        let mut signed: Vec<(PublicKey, SlashableMessage)> = Vec::new();
        let (mut before, mut after) = (0, 0);

        for round in 0..6u64 {
            let base = 100 * round + 10;
            // What another signer did: attested (base+5, base+6), proposed slot base+6.
            let (imp_source, imp_target) = (base + 5, base + 6);
            let interchange: Interchange = serde_json::from_value(serde_json::json!({
                "metadata": {"interchange_format_version": "5", "genesis_validators_root": format!("0x{}", "00".repeat(32))},
                "data": keys.iter().map(|k| serde_json::json!({
                    "pubkey": k.to_string(),
                    "signed_blocks": [{"slot": imp_target.to_string(), "signing_root": root(9).to_string()}],
                    "signed_attestations": [{"source_epoch": imp_source.to_string(), "target_epoch": imp_target.to_string(), "signing_root": root(9).to_string()}],
                })).collect::<Vec<_>>(),
            }))
            .unwrap();

            let imported = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            // Two replicas per key on different heads (roots 1 and 2), climbing from base+1,
            // with a surround attempt of the imported vote at each step.
            for key in &keys {
                for (replica, r) in [(a.clone(), 1u64), (b.clone(), 2u64)] {
                    let (key, imported) = (*key, imported.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut out = Vec::new();
                        for t in base + 1..=base + 9 {
                            for p in [att(t - 1, t, r), att(base, t, r + 10), block(t, r)] {
                                let after_import = imported.load(Ordering::SeqCst);
                                match replica.check_and_record(&key, &p, "online").await.map(|c| c.recorded) {
                                    Ok(Recorded::New) => out.push((p, after_import)),
                                    Ok(Recorded::Repeat) => panic!("nothing here repeats: {p:?}"),
                                    Err(ProtectionError::Refused(_)) => {}
                                    Err(e) => panic!("signing during an import failed: {e:?}"),
                                }
                            }
                            tokio::task::yield_now().await;
                        }
                        (key, out)
                    }));
                }
            }
            let importer = {
                let (db, imported) = (if round % 2 == 0 { a.clone() } else { b.clone() }, imported.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let n = db.import(&interchange).await;
                    imported.store(true, Ordering::SeqCst);
                    n
                })
            };
            assert_eq!(
                importer.await.unwrap(),
                Ok(keys.len()),
                "{backend:?} round {round}: the import failed"
            );
            for t in tasks {
                let (key, out) = t.await.unwrap();
                for (p, after_import) in out {
                    if !after_import {
                        before += 1;
                    } else {
                        after += 1;
                        // Signed after the import returned: nothing at or below what it brought.
                        match p {
                            SlashableMessage::Block { slot, .. } => {
                                assert!(slot.0 > imp_target, "{backend:?}: {p:?} after the import")
                            }
                            SlashableMessage::Attestation { source, target, .. } => assert!(
                                target.0 > imp_target && source.0 >= imp_source,
                                "{backend:?}: {p:?} after the import"
                            ),
                        }
                    }
                    signed.push((key, p));
                }
            }
        }

        // Nothing slashable among what Palisade signed, computed from the full list.
        for (i, (k1, p1)) in signed.iter().enumerate() {
            for (k2, p2) in &signed[i + 1..] {
                if k1 != k2 {
                    continue;
                }
                assert!(!slashable(p1, p2), "{backend:?}: {k1} signed {p1:?} and {p2:?}");
            }
        }
        // The import really landed among the signings, in some round.
        assert!(
            before > 0 && after > 0,
            "{backend:?}: {before} signed before imports, {after} after"
        );
        let export = a.export(Some(&keys)).await.unwrap();
        for (k, p) in &signed {
            assert!(
                in_export(&export, k, p),
                "{backend:?}: {k} signed {p:?}, not in the export"
            );
        }
    }
}

// ------------------------------------------------------------ behaviours on both backends

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_u64_range_is_stored_exactly() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        let key = pk(1);
        let big = u64::MAX - 1;
        assert_eq!(
            db.check_and_record(&key, &block(big, 1), "t").await.map(|c| c.recorded),
            Ok(Recorded::New)
        );
        assert_eq!(
            db.check_and_record(&key, &block(big, 1), "t").await.map(|c| c.recorded),
            Ok(Recorded::Repeat)
        );
        assert_eq!(
            db.check_and_record(&key, &block(u64::MAX, 2), "t")
                .await
                .map(|c| c.recorded),
            Ok(Recorded::New)
        );
        // A slot that would look small if the value wrapped is refused.
        assert!(matches!(
            db.check_and_record(&key, &block(5, 3), "t").await.map(|c| c.recorded),
            Err(ProtectionError::Refused(Refusal::BlockSlotNotAbove { .. }))
        ));
        let high = 1u64 << 63;
        assert_eq!(
            db.check_and_record(&key, &att(high - 1, high + 1, 1), "t")
                .await
                .map(|c| c.recorded),
            Ok(Recorded::New)
        );
        assert!(
            db.check_and_record(&key, &att(high - 2, high + 2, 2), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
        let export = db.export(None).await.unwrap();
        let json = serde_json::to_string(&export).unwrap();
        assert!(json.contains("\"18446744073709551615\""), "{json}");
        assert!(json.contains(&format!("\"{}\"", high + 1)), "{json}");
        // And it re-imports into a fresh database with the same watermarks.
        let (db2, _g2) = fresh(backend).await;
        // An import never pins the zero root: that takes a deliberate pin.
        assert_eq!(db2.import(&export).await, Err(ProtectionError::ZeroChain));
        assert_eq!(db2.pinned_chain().await.unwrap(), None);
        db2.pin_chain(Root::ZERO).await.unwrap();
        db2.import(&export).await.unwrap();
        assert!(
            db2.check_and_record(&key, &block(u64::MAX, 9), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_import_changes_nothing() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        let chain: Root = format!("0x{}", "11".repeat(32)).parse().unwrap();
        db.pin_chain(chain).await.unwrap();
        let key = pk(2);
        db.check_and_record(&key, &att(1, 2, 1), "t")
            .await
            .map(|c| c.recorded)
            .unwrap();
        let before = db.export(None).await.unwrap();

        // Wrong chain: refused whole, though its data is valid.
        let other = serde_json::json!({
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": format!("0x{}", "22".repeat(32))},
            "data": [{"pubkey": pk(3).to_string(), "signed_blocks": [{"slot": "100"}], "signed_attestations": []}]
        });
        let i = Interchange {
            ..serde_json::from_value(other).unwrap()
        };
        assert!(matches!(db.import(&i).await, Err(ProtectionError::WrongChain { .. })));
        assert_eq!(db.export(None).await.unwrap(), before, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reimports_cleanly_and_is_idempotent() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        for i in 0..5 {
            let key = pk(100 + i);
            db.check_and_record(&key, &block(10 + i, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
            db.check_and_record(&key, &att(3, 4 + i, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
        }
        let first = db.export(None).await.unwrap();
        assert_eq!(db.import(&first).await.unwrap(), 5);
        let second = db.export(None).await.unwrap();
        assert_eq!(
            first, second,
            "{backend:?}: re-importing an export changed the database"
        );
        // What this signer signed stays repeatable after re-importing its own export.
        assert_eq!(
            db.check_and_record(&pk(100), &block(10, 1), "t")
                .await
                .map(|c| c.recorded),
            Ok(Recorded::Repeat)
        );
        let (fresh_db, _g2) = fresh(backend).await;
        fresh_db.pin_chain(Root::ZERO).await.unwrap();
        fresh_db.import(&first).await.unwrap();
        assert!(
            fresh_db
                .check_and_record(&pk(100), &block(10, 1), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
        assert!(
            fresh_db
                .check_and_record(&pk(100), &block(11, 1), "t")
                .await
                .map(|c| c.recorded)
                .is_ok()
        );
    }
}

/// Keys first seen in the reverse of their pubkey order still export with their own history
/// (PostgreSQL's export once paired validators and history by different orders and dropped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_keeps_each_validators_history_whatever_the_registration_order() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        let mut keys: Vec<PublicKey> = (0..8).map(|i| pk(700 + i)).collect();
        keys.sort();
        keys.reverse();
        for (i, key) in keys.iter().enumerate() {
            let i = i as u64;
            db.check_and_record(key, &block(10 + i, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
            db.check_and_record(key, &att(1, 2 + i, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
            db.check_and_record(key, &att(2 + i, 3 + i, 2), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
        }
        let export = db.export(None).await.unwrap();
        assert_eq!(export.data.len(), keys.len());
        for (i, key) in keys.iter().enumerate() {
            let i = i as u64;
            let v = export.data.iter().find(|v| v.pubkey == *key).unwrap();
            let blocks: Vec<u64> = v.signed_blocks.iter().map(|b| b.slot.0).collect();
            let targets: Vec<u64> = v.signed_attestations.iter().map(|a| a.target_epoch.0).collect();
            assert_eq!(blocks, vec![10 + i], "{backend:?}: {key}");
            assert_eq!(targets, vec![2 + i, 3 + i], "{backend:?}: {key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_validators_are_refused_until_enabled() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        let key = pk(4);
        db.check_and_record(&key, &block(1, 1), "t")
            .await
            .map(|c| c.recorded)
            .unwrap();
        db.set_enabled(&[key], false).await.unwrap();
        assert_eq!(
            db.check_and_record(&key, &block(2, 1), "t").await.map(|c| c.recorded),
            Err(ProtectionError::Refused(Refusal::Disabled))
        );
        // A key disabled before it ever signed is refused too.
        db.set_enabled(&[pk(5)], false).await.unwrap();
        assert!(
            db.check_and_record(&pk(5), &block(1, 1), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
        db.set_enabled(&[key], true).await.unwrap();
        assert_eq!(
            db.check_and_record(&key, &block(2, 1), "t").await.map(|c| c.recorded),
            Ok(Recorded::New)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_bounds_history_and_keeps_watermarks() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        let key = pk(6);
        for e in 0..50u64 {
            db.check_and_record(&key, &att(e, e + 1, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
            db.check_and_record(&key, &block(e * 32, 1), "t")
                .await
                .map(|c| c.recorded)
                .unwrap();
        }
        let report = db.prune(10, 32).await.unwrap();
        // Targets 1..=50: keep those >= 40 (11); slots 0..=1568 step 32: keep >= 1248 (11).
        assert_eq!(report.attestations, 39, "{backend:?}");
        assert_eq!(report.blocks, 39, "{backend:?}");
        let export = db.export(None).await.unwrap();
        assert_eq!(export.data[0].signed_attestations.len(), 11);
        assert_eq!(export.data[0].signed_blocks.len(), 11);
        // Watermarks are untouched: the old messages are still refused.
        assert!(
            db.check_and_record(&key, &att(3, 4, 2), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
        assert!(
            db.check_and_record(&key, &block(64, 2), "t")
                .await
                .map(|c| c.recorded)
                .is_err()
        );
        assert_eq!(db.prune(10, 32).await.unwrap().attestations, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_pin_is_kept() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        assert_eq!(db.pinned_chain().await.unwrap(), None);
        let a: Root = format!("0x{}", "aa".repeat(32)).parse().unwrap();
        let b: Root = format!("0x{}", "bb".repeat(32)).parse().unwrap();
        assert_eq!(db.pin_chain(a).await.unwrap(), a);
        assert_eq!(
            db.pin_chain(b).await.unwrap(),
            a,
            "a second pin must not replace the first"
        );
        assert_eq!(db.pinned_chain().await.unwrap(), Some(a));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.sqlite").display());
    let first = SlashingDatabase::open(&url, &DbOptions::default()).await.unwrap();
    let second = SlashingDatabase::open(&url, &DbOptions::default()).await;
    let err = second.err().expect("a second open must fail").to_string();
    assert!(err.contains("in use by another Palisade process"), "{err}");
    drop(first);
    // Once the first is gone, the file opens again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(SlashingDatabase::open(&url, &DbOptions::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_an_empty_database() {
    let url = testkit::pg::shared().new_database();
    let keys: Vec<PublicKey> = (0..2000).map(pk).collect();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = url.clone();
        let mut keys = keys.clone();
        // Different orders, as different replicas would list their keys.
        keys.rotate_left(i * 300);
        tasks.push(tokio::spawn(async move {
            let db = SlashingDatabase::open(&url, &DbOptions::default()).await.unwrap();
            db.register(&keys).await.unwrap();
            db.pin_chain(Root::ZERO).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = testkit::pg::shared().psql(url.rsplit('/').next().unwrap(), "SELECT count(*) FROM validators");
    assert_eq!(n.trim(), "2000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_never_interfere() {
    for backend in BACKENDS {
        let (db, _g) = fresh(backend).await;
        db.pin_chain(Root::ZERO).await.unwrap();
        let mut seen = HashSet::new();
        for i in 0..20 {
            assert_eq!(
                db.check_and_record(&pk(i), &att(1, 2, 1), "t")
                    .await
                    .map(|c| c.recorded),
                Ok(Recorded::New)
            );
            seen.insert(pk(i));
        }
        assert_eq!(db.export(None).await.unwrap().data.len(), seen.len());
    }
}
