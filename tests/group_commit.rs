//! PostgreSQL's group commit: many validators' blocks and attestations checked and recorded
//! in one statement. Each member is decided as if it came alone, in arrival order, on two
//! replicas at once, and nothing signed is slashable.

use std::sync::Arc;

use palisade::protection::{ProtectionError, Recorded, Refusal, SlashableMessage, SlashingDatabase};
use palisade::types::{PublicKey, Root};

use testkit::slashable::{att, block, in_export, pk, slashable};

async fn replicas(n: usize) -> Vec<Arc<SlashingDatabase>> {
    let url = testkit::pg::shared().new_database();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(
            SlashingDatabase::open(&url, &testkit::db_options()).await.unwrap(),
        ));
    }
    out[0].pin_chain(Root::ZERO).await.unwrap();
    out
}

type Outcome = Result<Recorded, ProtectionError>;

fn outcomes(r: Vec<Result<palisade::protection::Accepted, ProtectionError>>) -> Vec<Outcome> {
    r.into_iter().map(|c| c.map(|c| c.recorded)).collect()
}

/// One batch on one replica: a repeat, a refusal, a double vote against another member of
/// the same batch, a new message, a validator with no row yet, and two messages of one
/// validator that are only safe in the order they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_of_a_batch_is_decided_alone_and_in_arrival_order() {
    let db = replicas(1).await.remove(0);
    let keys: Vec<PublicKey> = (0..7).map(|i| pk(1000 + i)).collect();
    db.register(&keys[..6]).await.unwrap();
    db.check_and_record(&keys[0], &att(1, 2, 1), "setup").await.unwrap();
    db.check_and_record(&keys[1], &att(1, 5, 1), "setup").await.unwrap();
    db.check_and_record(&keys[5], &block(10, 1), "setup").await.unwrap();

    let batch = [
        (keys[0], att(1, 2, 1)),  // repeat of what was signed
        (keys[1], att(1, 3, 2)),  // refused: not above the target 5
        (keys[2], att(2, 3, 10)), // new
        (keys[2], att(2, 3, 11)), // double vote against the member before it
        (keys[3], att(3, 4, 1)),  // new
        (keys[4], att(4, 5, 1)),  // then a lower one: refused, it came second
        (keys[4], att(3, 4, 1)),
        (keys[5], block(11, 2)), // a block among attestations
        (keys[6], att(1, 2, 1)), // no row yet: registered, then new
    ];
    let got = outcomes(db.check_together(&batch, "batch").await);
    let refused = |o: &Outcome| matches!(o, Err(ProtectionError::Refused(_)));
    assert_eq!(got[0], Ok(Recorded::Repeat), "{got:?}");
    assert!(refused(&got[1]), "{got:?}");
    assert_eq!(got[2], Ok(Recorded::New), "{got:?}");
    assert!(
        matches!(got[3], Err(ProtectionError::Refused(Refusal::TargetNotAbove { .. }))),
        "{got:?}"
    );
    assert_eq!(got[4], Ok(Recorded::New), "{got:?}");
    assert_eq!(got[5], Ok(Recorded::New), "{got:?}");
    assert!(refused(&got[6]), "{got:?}");
    assert_eq!(got[7], Ok(Recorded::New), "{got:?}");
    assert_eq!(got[8], Ok(Recorded::New), "{got:?}");

    let export = db.export(None).await.unwrap();
    for (i, (key, p)) in batch.iter().enumerate() {
        let expected = got[i] == Ok(Recorded::New) || got[i] == Ok(Recorded::Repeat);
        assert_eq!(
            in_export(&export, key, p),
            expected,
            "member {i}: {p:?} -> {:?}",
            got[i]
        );
    }
}

/// Two replicas run batches over the same validators at the same moment, each batch with a
/// repeat, a refusal, a double vote inside the batch, a double vote against the other
/// replica's batch and a new message of its own. Over many rounds: exactly one of each
/// conflicting set is signed, the members nobody contends are decided as if alone, and every
/// signed message is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_on_two_replicas_never_sign_a_slashable_pair() {
    let dbs = replicas(2).await;
    let mut signed: Vec<(PublicKey, SlashableMessage)> = Vec::new();
    for round in 0..25u64 {
        let k = |i: u64| pk(round * 10 + i);
        let (repeat, refuse, inner, contended, own_a, own_b) = (k(0), k(1), k(2), k(3), k(4), k(5));
        dbs[0].check_and_record(&repeat, &att(1, 2, 1), "setup").await.unwrap();
        dbs[0].check_and_record(&refuse, &att(1, 5, 1), "setup").await.unwrap();
        signed.push((repeat, att(1, 2, 1)));
        signed.push((refuse, att(1, 5, 1)));
        let batch = |side: u64, own: PublicKey| {
            vec![
                (repeat, att(1, 2, 1)),
                (refuse, att(2, 4, 9)),
                (inner, att(2, 3, 10 + side)),
                (inner, att(2, 3, 20 + side)),
                (contended, att(3, 6, 30 + side)),
                (contended, block(7, 40 + side)),
                (own, att(5, 6, 1)),
            ]
        };
        let (a, b) = (batch(0, own_a), batch(1, own_b));
        let (ra, rb) = tokio::join!(
            dbs[0].check_together(&a, "replica-a"),
            dbs[1].check_together(&b, "replica-b")
        );
        let (ra, rb) = (outcomes(ra), outcomes(rb));
        for (r, side) in [(&ra, "a"), (&rb, "b")] {
            assert_eq!(r[0], Ok(Recorded::Repeat), "round {round} {side}: {r:?}");
            assert!(
                matches!(r[1], Err(ProtectionError::Refused(_))),
                "round {round} {side}: {r:?}"
            );
            assert_eq!(r[6], Ok(Recorded::New), "round {round} {side}: {r:?}");
            for o in r {
                assert!(
                    matches!(o, Ok(_) | Err(ProtectionError::Refused(_))),
                    "round {round} {side}: an error, not a decision: {r:?}"
                );
            }
        }
        let won: Vec<(PublicKey, SlashableMessage)> = a
            .iter()
            .zip(&ra)
            .chain(b.iter().zip(&rb))
            .filter(|(_, o)| matches!(o, Ok(Recorded::New)))
            .map(|(m, _)| *m)
            .collect();
        let count = |key: PublicKey, blocks: bool| {
            won.iter()
                .filter(|(k, p)| *k == key && matches!(p, SlashableMessage::Block { .. }) == blocks)
                .count()
        };
        assert_eq!(count(inner, false), 1, "round {round}: {won:?}");
        assert_eq!(count(contended, false), 1, "round {round}: {won:?}");
        assert_eq!(count(contended, true), 1, "round {round}: {won:?}");
        signed.extend(won);
    }
    for (i, (k1, p1)) in signed.iter().enumerate() {
        for (k2, p2) in &signed[i + 1..] {
            assert!(
                !(k1 == k2 && slashable(p1, p2)),
                "slashable pair signed: {p1:?} and {p2:?}"
            );
        }
    }
    let export = dbs[1].export(None).await.unwrap();
    for (key, p) in &signed {
        assert!(
            in_export(&export, key, p),
            "{p:?} was signed but is not in the database"
        );
    }
}

/// Many requests at once through the queue (not a hand-made batch): batches form by
/// themselves, each validator's messages in a closed loop, and all are signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_form_batches_and_all_commit() {
    let db = replicas(1).await.remove(0);
    let keys: Vec<PublicKey> = (0..64).map(|i| pk(5000 + i)).collect();
    db.register(&keys).await.unwrap();
    let mut tasks = Vec::new();
    for key in keys.clone() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for e in 1..=10u64 {
                let r = db.check_and_record(&key, &att(e - 1, e, e), "load").await;
                assert_eq!(r.map(|c| c.recorded), Ok(Recorded::New), "epoch {e}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let export = db.export(None).await.unwrap();
    let total: usize = export.data.iter().map(|v| v.signed_attestations.len()).sum();
    assert_eq!(total, 640);
}
