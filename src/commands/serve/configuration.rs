//! Step 1: what the options say, checked before anything is opened: the network and its clock
//! window, the key sources, the API tokens, the signing policy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use super::KEYMANAGER_DIR;
use crate::commands::cli::ServeArgs;
use crate::http::auth::ApiToken;
use crate::keys::fleet::FleetSecret;
use crate::keys::sources::{Configured, KeyOptions, configure};
use crate::network::Network;
use crate::network::clock::ClockWindow;
use crate::signing::policy::TypeSet;
use crate::types::Root;

pub struct Config {
    pub network: Network,
    /// `None` when the genesis time is unknown or the window is turned off.
    pub clock: Option<ClockWindow>,
    /// The chain configured (the network's, or `--genesis-validators-root`), if any.
    pub chain: Option<Root>,
    pub key_sources: Configured,
    pub fleet_secret: Option<Arc<FleetSecret>>,
    pub token: Arc<ApiToken>,
    pub signing_token: Option<Arc<ApiToken>>,
    pub signing_types: TypeSet,
}

pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut network = Network::load(&args.network)?;
    if let Some(t) = args.genesis_time {
        network.genesis_time = Some(t);
    }
    let clock = clock_window(args, &network);
    let chain = args.genesis_validators_root.or(network.genesis_validators_root);
    let key_options = KeyOptions {
        keystores_path: args.keystores_path.clone(),
        keystores_passwords_path: args.keystores_passwords_path.clone(),
        keystores_password_file: args.keystores_password_file.clone(),
        key_config_path: args.key_config_path.clone(),
        keymanager_path: Some(args.data_path.join(KEYMANAGER_DIR)),
        aws_bulk: super::aws::bulk(args)?,
    };
    crate::keys::keystore::KDF_MEMORY.set_budget(args.kdf_memory_mb.saturating_mul(1 << 20));
    let key_sources = configure(&key_options)?;
    let fleet_secret = match &args.shared_keystore_secret_file {
        Some(file) => Some(Arc::new(FleetSecret::load(file)?)),
        None => None,
    };
    let (token, signing_token) = tokens(args)?;
    let signing_types = TypeSet::from_lists(&args.allow_signing_types, &args.deny_signing_types)
        .map_err(|e| anyhow!("--allow-signing-types / --deny-signing-types: {e}"))?;
    if signing_types != TypeSet::ALL {
        tracing::info!(allowed = ?signing_types, "signing policy: only these types are signed");
    }
    Ok(Config {
        network,
        clock,
        chain,
        key_sources,
        fleet_secret,
        token,
        signing_token,
        signing_types,
    })
}

/// `--future-tolerance-secs` on the network's genesis time, said in the log either way.
fn clock_window(args: &ServeArgs, network: &Network) -> Option<ClockWindow> {
    let clock = args
        .future_tolerance_secs
        .0
        .and_then(|secs| ClockWindow::new(network, Duration::from_secs(secs)));
    match (&clock, args.future_tolerance_secs.0) {
        (Some(c), _) => tracing::info!(
            tolerance_secs = c.tolerance().as_secs(),
            "clock window on: messages further ahead of this host's clock are refused"
        ),
        (None, None) => tracing::warn!("clock window off (--future-tolerance-secs off)"),
        (None, Some(_)) => tracing::warn!(
            network = %network.name,
            "clock window off: the network's genesis time is unknown (set --genesis-time to turn it on)"
        ),
    }
    clock
}

/// The admin token (created when missing) and the signing routes' token, if required.
fn tokens(args: &ServeArgs) -> anyhow::Result<(Arc<ApiToken>, Option<Arc<ApiToken>>)> {
    let (token, created) = ApiToken::load_or_create(&args.api_token_file)?;
    if created {
        tracing::info!(file = %args.api_token_file.display(), "created an API token for the admin and Key Manager endpoints");
    }
    for warning in token.weaknesses(&args.api_token_file) {
        tracing::warn!("{warning}");
    }
    let signing_token = match &args.signing_token_file {
        None => None,
        Some(file) => {
            let t = ApiToken::load_as(file, "--signing-token-file")?;
            for warning in t.weaknesses(file) {
                tracing::warn!("{warning}");
            }
            tracing::info!(file = %file.display(), "the signing routes require a bearer token");
            Some(Arc::new(t))
        }
    };
    Ok((Arc::new(token), signing_token))
}
