//! Exhaustive model check.

use super::*;

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
