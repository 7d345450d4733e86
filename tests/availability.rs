//! Health that tells the truth: readiness means "this replica can sign safely now", and a
//! known outage is refused at once so that a client can try another replica in time.

use std::time::Duration;

use testkit::http::*;
use testkit::pg::PgCluster;
use testkit::server::Palisade;

async fn status(p: &Palisade, path: &str) -> (u16, String) {
    let r = client().get(p.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_for(p: &Palisade, path: &str, want: u16) -> String {
    let last = std::sync::Mutex::new(String::new());
    let found = testkit::wait::within(&format!("{path} answers {want}"), Duration::from_secs(60), || async {
        let (s, body) = status(p, path).await;
        if s == want {
            return Some(body);
        }
        *last.lock().unwrap() = body;
        None
    })
    .await;
    found.unwrap_or_else(|| {
        let last = last.lock().unwrap();
        panic!("{path} never answered {want}; last: {last}\n{}", p.log())
    })
}

async fn metric(p: &Palisade, name: &str) -> String {
    let (_, text) = status(p, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name}"))
        .to_string()
}

/// A primary that cannot confirm commits (its one synchronous standby is gone) makes the
/// replica not ready, its health 503, `palisade_database_up` 0, and every attestation a
/// 503 at once; when the standby is back, all turn green by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_synchronous_standby_is_seen() {
    let pg = PgCluster::start_with(&[]);
    let url = pg.new_database();
    // The production limit: a commit that cannot complete within it turns the replica down.
    let (_k, p) = signer_with_interop_keys(&[
        "--database-url",
        &url,
        "--genesis-validators-root",
        MINIMAL_GVR,
        "--database-timeout-ms",
        "1500",
    ]);
    wait_for(&p, "/readyz", 200).await;
    let sign = sign_url(&p, &testkit::interop_pubkeys()[0]);
    assert_eq!(post(&sign, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await.0, 200);

    // Every commit now waits for a standby that does not exist.
    pg.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = 'gone'");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let why = wait_for(&p, "/readyz", 503).await;
    assert!(why.contains("database"), "{why}");
    assert_eq!(status(&p, "/healthcheck").await.0, 503);
    assert_eq!(metric(&p, "palisade_database_up").await, "palisade_database_up 0");
    // Refused at once while the failed check is recent. (A loaded machine may let the verdict
    // go stale between two checks; then the request waits for the database and is refused
    // after the timeout instead: never signed.)
    testkit::wait::until("an attestation refused at once", Duration::from_secs(30), || async {
        let (s, b) = post(&sign, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await;
        assert_eq!(s, 503, "{b}");
        b["error"].as_str().unwrap().contains("without waiting").then_some(())
    })
    .await;
    // Nothing else is blocked: types without protection still sign.
    assert_eq!(post(&sign, randao(3, MINIMAL_GVR).to_string()).await.0, 200);

    pg.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    wait_for(&p, "/readyz", 200).await;
    assert_eq!(post(&sign, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await.0, 200);
    assert_eq!(metric(&p, "palisade_database_up").await, "palisade_database_up 1");
    assert!(
        p.log().contains("ready: blocks and attestations can be signed"),
        "{}",
        p.log()
    );
}

/// Keys that fail to load make the replica not ready (unless fewer are accepted), and
/// "ready" is logged only once keys are usable, apart from "listening".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_requires_usable_keys() {
    let (dir, ks, _) = testkit::interop_keystores();
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, "not the password").unwrap();
    let net = minimal_network();
    let args = [
        "--keystores-path",
        ks.to_str().unwrap(),
        "--keystores-password-file",
        wrong.to_str().unwrap(),
        "--network",
        &net,
    ];
    let p = Palisade::serve(&args);
    keys_loaded(&p).await;
    let why = wait_for(&p, "/readyz", 503).await;
    assert!(why.contains("8 of 8 keys failed"), "{why}");
    let (s, h) = status(&p, "/healthcheck").await;
    assert_eq!(s, 503, "{h}");
    assert!(
        !p.log().contains("ready: blocks"),
        "said ready with no usable key:\n{}",
        p.log()
    );
    let mut fewer = args.to_vec();
    fewer.extend(["--ready-min-keys", "0"]);
    let p = Palisade::serve(&fewer);
    keys_loaded(&p).await;
    wait_for(&p, "/readyz", 200).await;
}

/// Where no chain is configured and none pinned yet, the replica is not ready, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpinned_chain_is_not_ready() {
    let p = Palisade::serve(&["--network", "minimal"]);
    let why = wait_for(&p, "/readyz", 503).await;
    assert!(why.contains("no chain pinned"), "{why}");
}

/// A replica whose database refuses its role (a password rotated, the role disabled) cannot
/// record anything: blocks and attestations get 503 at once, retryable on another replica,
/// never a 500, and readiness says so; when the role is let in again, signing resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_is_an_outage_not_an_error() {
    let pg = PgCluster::start_with(&[]);
    let db = pg.new_database();
    pg.psql("postgres", "CREATE ROLE replica_x LOGIN SUPERUSER");
    let url = db.replacen("postgres@", "replica_x@", 1);
    let (_k, p) = signer_with_interop_keys(&["--database-url", &url, "--genesis-validators-root", MINIMAL_GVR]);
    wait_for(&p, "/readyz", 200).await;
    let sign = sign_url(&p, &testkit::interop_pubkeys()[0]);
    assert_eq!(post(&sign, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await.0, 200);

    pg.psql(
        "postgres",
        "ALTER ROLE replica_x NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'replica_x'",
    );
    let (s, b) = post(&sign, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 503, "{b}");
    let why = wait_for(&p, "/readyz", 503).await;
    assert!(why.contains("database"), "{why}");

    pg.psql("postgres", "ALTER ROLE replica_x LOGIN");
    wait_for(&p, "/readyz", 200).await;
    assert_eq!(post(&sign, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await.0, 200);
}
