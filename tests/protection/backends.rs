//! Behaviours on both backends.

use super::*;

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
    let first = SlashingDatabase::open(&url, &testkit::db_options()).await.unwrap();
    let second = SlashingDatabase::open(&url, &testkit::db_options()).await;
    let err = second.err().expect("a second open must fail").to_string();
    assert!(err.contains("in use by another Palisade process"), "{err}");
    drop(first);
    // Once the first is gone, the file opens again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(SlashingDatabase::open(&url, &testkit::db_options()).await.is_ok());
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
            let db = SlashingDatabase::open(&url, &testkit::db_options()).await.unwrap();
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
