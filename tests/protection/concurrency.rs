//! Concurrency (PostgreSQL).

use super::*;

/// Two handles on one fresh PostgreSQL database, each with its own pool, like two replicas.
async fn two_pg_replicas() -> (Arc<SlashingDatabase>, Arc<SlashingDatabase>) {
    let url = testkit::pg::shared().new_database();
    let opts = DbOptions {
        pool_size: 8,
        ..testkit::db_options()
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
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
            let progress = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            // Two replicas per key on different heads (roots 1 and 2), climbing from base+1,
            // with a surround attempt of the imported vote at each step; once the import has
            // returned, one step past it (so that every round signs on both sides of it,
            // however the machine schedules the tasks).
            for key in &keys {
                for (replica, r) in [(a.clone(), 1u64), (b.clone(), 2u64)] {
                    let (key, imported, progress) = (*key, imported.clone(), progress.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut out = Vec::new();
                        let sign = async |p: SlashableMessage, out: &mut Vec<(SlashableMessage, bool)>| {
                            let after_import = imported.load(Ordering::SeqCst);
                            match replica.check_and_record(&key, &p, "online").await.map(|c| c.recorded) {
                                Ok(Recorded::New) => out.push((p, after_import)),
                                Ok(Recorded::Repeat) => panic!("nothing here repeats: {p:?}"),
                                Err(ProtectionError::Refused(_)) => {}
                                Err(e) => panic!("signing during an import failed: {e:?}"),
                            }
                            progress.fetch_add(1, Ordering::SeqCst);
                        };
                        for t in base + 1..=base + 9 {
                            for p in [att(t - 1, t, r), att(base, t, r + 10), block(t, r)] {
                                sign(p, &mut out).await;
                            }
                            tokio::task::yield_now().await;
                        }
                        testkit::wait::until("the import returns", Duration::from_secs(120), || async {
                            imported.load(Ordering::SeqCst).then_some(())
                        })
                        .await;
                        for p in [att(base + 9, base + 10, r), block(base + 10, r)] {
                            sign(p, &mut out).await;
                        }
                        (key, out)
                    }));
                }
            }
            let importer = {
                let (db, imported) = (if round % 2 == 0 { a.clone() } else { b.clone() }, imported.clone());
                let progress = progress.clone();
                tokio::spawn(async move {
                    // Among the signings: once some have been answered.
                    testkit::wait::until("signings under way", Duration::from_secs(60), || async {
                        (progress.load(Ordering::SeqCst) >= 6).then_some(())
                    })
                    .await;
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
