//! Reloading keys while signing goes on: `POST /reload` (Web3Signer's path and statuses: 202,
//! or 409 while one runs; `GET /reload` for the outcome), SIGHUP and `--keys-refresh-secs`
//! all start the same reload of every source. One runs at a time; its outcome (what was
//! added, removed and failed) is kept for `GET /reload` and logged.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::keys::{KeyLoader, LoadReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Idle,
    Running,
    Completed,
    CompletedWithErrors,
    /// The reload itself broke off (no key set was changed by what did not run).
    Failed,
}

/// What `GET /reload` answers: Web3Signer's fields, plus what the last reload did.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadState {
    pub status: Status,
    #[serde(rename = "lastOperationTime", skip_serializing_if = "Option::is_none")]
    pub last_operation_time: Option<String>,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Who asked for the last reload (`api`, `SIGHUP`, `refresh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<LoadReport>,
}

/// Why a reload did not start.
#[derive(Debug, thiserror::Error)]
#[error("A reload operation is already in progress. Please try again later.")]
pub struct AlreadyRunning;

pub struct Reloads {
    loader: Arc<KeyLoader>,
    state: Mutex<ReloadState>,
}

/// RFC 3339 UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let date = crate::keys::stores::http::amz_date(t);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    )
}

impl Reloads {
    pub fn new(loader: Arc<KeyLoader>) -> Arc<Self> {
        Arc::new(Reloads {
            loader,
            state: Mutex::new(ReloadState {
                status: Status::Idle,
                last_operation_time: None,
                last_error: None,
                trigger: None,
                last: None,
            }),
        })
    }

    pub fn state(&self) -> ReloadState {
        self.state.lock().expect("reload state").clone()
    }

    /// Starts a reload in the background; `AlreadyRunning` if one is.
    pub fn start(self: &Arc<Self>, trigger: &'static str) -> Result<(), AlreadyRunning> {
        {
            let mut s = self.state.lock().expect("reload state");
            if s.status == Status::Running || self.loader.reloading() {
                return Err(AlreadyRunning);
            }
            s.status = Status::Running;
            s.trigger = Some(trigger);
            s.last_error = None;
            s.last_operation_time = Some(rfc3339(SystemTime::now()));
        }
        tracing::info!(trigger, "reloading keys from every source");
        let me = self.clone();
        tokio::spawn(async move {
            // If the reload task ends without an outcome (it panicked), say so: a state stuck
            // at `running` would refuse every later reload.
            let mut unfinished = Unfinished(me.clone(), true);
            let report = me.loader.reload().await;
            unfinished.1 = false;
            let mut s = me.state.lock().expect("reload state");
            s.last_operation_time = Some(rfc3339(SystemTime::now()));
            match report {
                Some(r) => {
                    for c in &r.added {
                        tracing::info!(pubkey = %c.pubkey, source = %c.source, "reload: key added");
                    }
                    for c in &r.removed {
                        tracing::info!(pubkey = %c.pubkey, source = %c.source, "reload: key removed");
                    }
                    if r.failed.is_empty() {
                        s.status = Status::Completed;
                        s.last_error = None;
                    } else {
                        s.status = Status::CompletedWithErrors;
                        s.last_error = Some(format!(
                            "Reload completed with {} signer loading error(s)",
                            r.failed.len()
                        ));
                    }
                    s.last = Some(r);
                }
                // The loader was reloading already (never, while `start` guards it).
                None => {
                    s.status = Status::Failed;
                    s.last_error = Some("another reload was running; nothing reloaded".into());
                }
            }
        });
        Ok(())
    }
}

/// Marks the reload failed when dropped while still set (a task that ended without an
/// outcome).
struct Unfinished(Arc<Reloads>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            return;
        }
        if let Ok(mut s) = self.0.state.lock() {
            s.status = Status::Failed;
            s.last_error = Some("Reload failed".into());
            s.last_operation_time = Some(rfc3339(SystemTime::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(rfc3339(t), "2015-08-30T12:36:00Z");
    }
}
