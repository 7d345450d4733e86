//! How the commands reach the slashing-protection database: the URL, and the role and
//! password given apart from it.

use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use crate::commands::cli::{DatabaseArgs, Hidden};
use crate::protection::{DbOptions, SlashingDatabase, redact_url, url_has_password};

/// The password from `--database-password-file` (first line, read once) or
/// `--database-password`; and a warning when a password is on the process's own command line,
/// where every local user can read it (`/proc/PID/cmdline`; a configuration file's values are
/// not there).
pub fn password(url: &str, file: Option<&Path>, given: Option<&Hidden>) -> anyhow::Result<Option<Zeroizing<String>>> {
    let real = || std::env::args().skip(1);
    let url_on_command_line = real().any(|a| a.contains(url) && !url.is_empty());
    let password_on_command_line = real().any(|a| {
        ["--database-password", "--slashing-protection-db-password"]
            .iter()
            .any(|o| a == *o || a.starts_with(&format!("{o}=")))
    });
    if (url_on_command_line && url_has_password(url)) || password_on_command_line {
        tracing::warn!(
            "the database password is on the command line, which every local user can read: give it with \
             --database-password-file, in a --config-file, or the URL in PALISADE_DATABASE_URL"
        );
    }
    if let Some(given) = given {
        return Ok(Some(given.0.clone()));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    if let Some(mode) = crate::fsutil::readable_by_others(file) {
        tracing::warn!(file = %file.display(), "the database password file can be read by other users (mode {mode:o}): chmod 600 it");
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("--database-password-file {}: cannot read", file.display()))?,
    );
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if password.is_empty() {
        bail!("--database-password-file {}: the file is empty", file.display());
    }
    Ok(Some(Zeroizing::new(password.to_string())))
}

/// Opens the database for a `slashing-protection` command, as `serve` would.
pub async fn open(db: &DatabaseArgs) -> anyhow::Result<SlashingDatabase> {
    let options = DbOptions {
        password: password(
            &db.database_url,
            db.database_password_file.as_deref(),
            db.database_password.as_ref(),
        )?,
        username: db.database_username.clone(),
        ..DbOptions::default()
    };
    SlashingDatabase::open(&db.database_url, &options)
        .await
        .with_context(|| format!("opening slashing-protection database {}", redact_url(&db.database_url)))
}
