//! Every PostgreSQL transaction runs at SERIALIZABLE, and nothing between Palisade and the
//! database can silently lower it: a connection that lost the setting writes nothing, and a
//! pooler that drops it is refused at startup.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade::protection::{DbOptions, ProtectionError, SlashableMessage, SlashingDatabase};
use palisade::types::{Epoch, PublicKey, SigningRoot};

fn pk(i: u64) -> PublicKey {
    let mut sk = zeroize::Zeroizing::new([0u8; 32]);
    sk[24..].copy_from_slice(&(i + 1).to_be_bytes());
    palisade::keys::SecretKey::from_bytes(&sk).unwrap().public_key()
}

fn att(s: u64, t: u64) -> SlashableMessage {
    SlashableMessage::Attestation {
        source: Epoch(s),
        target: Epoch(t),
        root: SigningRoot([t as u8; 32]),
    }
}

/// A session whose default isolation was lowered after startup (what a pooler handing out
/// another client's server connection amounts to): the signing statement writes nothing and
/// says why; the same session at SERIALIZABLE signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_below_serializable_writes_nothing() {
    let url = testkit::pg::shared().new_database();
    let opts = DbOptions {
        pool_size: 1,
        ..testkit::db_options()
    };
    let db = SlashingDatabase::open(&url, &opts).await.unwrap();
    let key = pk(1);
    db.register(&[key]).await.unwrap();
    let SlashingDatabase::Postgres(store) = &db else {
        unreachable!("a postgres:// URL opens PostgreSQL")
    };
    // Every connection the signings may use, held at once so that each is a different one.
    let set = |level: &'static str| async move {
        let pool = store.signing_pool();
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            let mut c = pool.acquire().await.unwrap();
            sqlx::query(&format!("SET default_transaction_isolation = '{level}'"))
                .execute(&mut *c)
                .await
                .unwrap();
            held.push(c);
        }
    };

    set("read committed").await;
    match db.check_and_record(&key, &att(1, 2), "test").await {
        Err(ProtectionError::Internal(m)) => assert!(m.contains("not SERIALIZABLE"), "{m}"),
        other => panic!("signed below SERIALIZABLE: {other:?}"),
    }
    let w = db.watermarks_of(&[key]).await.unwrap();
    assert_eq!(w[0].1.att_target, None, "nothing may be recorded");

    set("serializable").await;
    db.check_and_record(&key, &att(1, 2), "test").await.unwrap();
    let w = db.watermarks_of(&[key]).await.unwrap();
    assert_eq!(w[0].1.att_target, Some(Epoch(2)));
}

/// PgBouncer in transaction mode, told to ignore the `options` startup parameter (the usual
/// way to get clients through it), drops `default_transaction_isolation`: Palisade refuses to
/// start on it, naming the problem.
#[test]
fn a_pooler_that_drops_the_isolation_level_is_refused() {
    let cluster = testkit::pg::shared();
    let url = cluster.new_database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let bouncer = PgBouncer::start(cluster.port, &db);
    let through = format!("postgres://postgres@127.0.0.1:{}/{db}", bouncer.port);
    let work = tempfile::tempdir().unwrap();
    let (ok, _, err) = testkit::server::run(
        &[
            "serve",
            "--http-port",
            "0",
            "--network",
            "minimal",
            "--database-url",
            &through,
        ],
        work.path(),
    );
    assert!(!ok, "started through a pooler that drops the isolation level");
    assert!(err.contains("not SERIALIZABLE") && err.contains("PgBouncer"), "{err}");
    // Nothing was written: not even the schema.
    let tables = cluster.psql(&db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(tables.trim(), "0");
}

struct PgBouncer {
    port: u16,
    _lease: testkit::procs::PortLease,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(pg_port: u16, db: &str) -> PgBouncer {
        let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer not found: install it (apt-get install pgbouncer), as .ci/run does");
        // Outside the checkout and readable by the `postgres` user, which runs it as root.
        let dir = tempfile::Builder::new()
            .prefix("palisade-pgbouncer")
            .tempdir_in("/tmp")
            .unwrap();
        let lease = testkit::procs::lease_port();
        let port = lease.port;
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{db} = host=127.0.0.1 port={pg_port} dbname={db}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 ignore_startup_parameters = options,extra_float_digits\n",
                users = dir.path().join("users.txt").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(exe);
        cmd.arg(&ini).stdout(Stdio::null()).stderr(Stdio::piped());
        if testkit::procs::is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let (uid, gid) = testkit::pg::postgres_user();
            cmd.uid(uid).gid(gid);
        }
        let child = testkit::procs::spawn_tied(cmd, libc::SIGKILL).expect("starting pgbouncer");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer {
            port,
            _lease: lease,
            child,
            _dir: dir,
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
