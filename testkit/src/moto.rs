//! A real AWS Secrets Manager API on loopback: moto in server mode (`pip install
//! 'moto[server]'`), started per test like PostgreSQL, and stopped to play an outage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use palisade::keys::stores::aws::Credentials;
use palisade::keys::stores::aws::sigv4;
use zeroize::Zeroizing;

use super::procs::{PortLease, lease_port, spawn_tied};

/// Credentials moto accepts (it does not check signatures, but routes by their scope).
pub const ACCESS_KEY_ID: &str = "AKIDPALISADETEST";
pub const SECRET_ACCESS_KEY: &str = "palisade-test-secret-access-key";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub port: u16,
    _lease: PortLease,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Moto {
    pub fn start() -> Moto {
        let lease = lease_port();
        let log = std::env::temp_dir().join(format!("palisade-moto-{}-{}.log", std::process::id(), lease.port));
        let out = std::fs::File::create(&log).expect("moto log");
        // `PALISADE_MOTO_PYTHON`: a Python with moto (a virtualenv where the system's is
        // externally managed).
        let python = std::env::var("PALISADE_MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(python);
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &lease.port.to_string()])
            .stdout(Stdio::null())
            .stderr(out);
        let child = spawn_tied(cmd, libc::SIGKILL).expect("starting moto (pip install 'moto[server]')");
        let moto = Moto {
            port: lease.port,
            _lease: lease,
            child: Mutex::new(Some(child)),
            log,
        };
        let port = moto.port;
        super::wait::until_blocking("moto answers", Duration::from_secs(60), || {
            if let Some(c) = moto.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "moto exited ({status}); is it installed (pip install 'moto[server]')?\n{}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (an outage; its secrets are gone with it).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: Zeroizing::new(SECRET_ACCESS_KEY.into()),
            session_token: None,
        }
    }

    /// One signed Secrets Manager call; the answer's status and body.
    pub async fn call(&self, operation: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = serde_json::to_vec(body).unwrap();
        let amz_date = palisade::keys::stores::http::amz_date(std::time::SystemTime::now());
        let host = format!("127.0.0.1:{}", self.port);
        let headers = vec![
            ("host".to_string(), host),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-target".to_string(), format!("secretsmanager.{operation}")),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ];
        let auth = sigv4::authorization(
            &sigv4::Request {
                method: "POST",
                path: "/",
                headers: &headers,
                body: &body,
            },
            &Self::credentials(),
            &sigv4::Scope {
                region: REGION,
                service: "secretsmanager",
                amz_date: &amz_date,
            },
        );
        let mut req = super::http::client().post(format!("{}/", self.url())).body(body);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k, v);
        }
        let r = req.header("authorization", auth).send().await.expect("moto");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Creates a secret with a string value and tags.
    pub async fn create_secret(&self, name: &str, value: &str, tags: &[(&str, &str)]) {
        let tags: Vec<serde_json::Value> = tags
            .iter()
            .map(|(k, v)| serde_json::json!({"Key": k, "Value": v}))
            .collect();
        let request = serde_json::json!({"Name": name, "SecretString": value, "Tags": tags});
        let (mut s, mut b) = self.call("CreateSecret", &request).await;
        // moto's secret map is not safe for concurrent writes: it may answer 500 ("dictionary
        // changed size during iteration") before storing anything. Tried again a few times.
        for _ in 0..5 {
            if s != 500 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            (s, b) = self.call("CreateSecret", &request).await;
        }
        assert_eq!(s, 200, "CreateSecret {name}: {b}");
    }

    /// Many secrets at once (16 in flight).
    pub async fn create_secrets(&self, secrets: Vec<(String, String)>, tags: &[(&str, &str)]) {
        use futures::stream::{self, StreamExt};
        stream::iter(secrets)
            .for_each_concurrent(16, |(name, value)| async move {
                self.create_secret(&name, &value, tags).await
            })
            .await;
    }

    /// Replaces a secret's value.
    pub async fn put_secret_value(&self, name: &str, value: &str) {
        let (s, b) = self
            .call(
                "PutSecretValue",
                &serde_json::json!({"SecretId": name, "SecretString": value}),
            )
            .await;
        assert_eq!(s, 200, "PutSecretValue {name}: {b}");
    }

    pub async fn delete_secret(&self, name: &str) {
        let (s, b) = self
            .call(
                "DeleteSecret",
                &serde_json::json!({"SecretId": name, "ForceDeleteWithoutRecovery": true}),
            )
            .await;
        assert_eq!(s, 200, "DeleteSecret {name}: {b}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "----- moto on port {} (last 30 log lines) -----\n{}",
                self.port,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
