//! Command line: `palisade serve` and `palisade slashing-protection import|export`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::types::{Epoch, PublicKey, Root, Slot};

#[derive(Parser, Debug)]
#[command(
    name = "palisade",
    version,
    about = "A remote signer for Ethereum validators (Web3Signer eth2 API) with EIP-3076 slashing protection on PostgreSQL or SQLite",
    long_about = None
)]
pub struct Cli {
    /// Options from a YAML file: long option names (or Web3Signer's) as keys, at the top or
    /// under `eth2.`/`serve.`. The command line wins over the environment, which wins over
    /// the file.
    #[arg(long, global = true, env = "PALISADE_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// `palisade=debug,sqlx=warn`. At debug every signing is logged.
    #[arg(
        long,
        global = true,
        env = "PALISADE_LOG_LEVEL",
        default_value = "info",
        alias = "logging"
    )]
    pub log_level: String,

    /// `text`, or `json` (one object per line, for log shippers).
    #[arg(long, global = true, env = "PALISADE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the signer.
    Serve(Box<ServeArgs>),
    /// Import or export EIP-3076 slashing-protection data.
    #[command(subcommand)]
    SlashingProtection(SlashingProtectionCommand),
    /// Split a validator key into t-of-n shares (and, for emergencies, combine them again).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Split an EIP-2335 keystore (or a new key) into N share keystores, any T of which sign
    /// for it. Each share is encrypted with its own random password, written beside it; the
    /// whole key exists only in this process's memory.
    Split(SplitArgs),
    /// Emergency recovery only: rebuild the whole key from T share keystores. The result is one
    /// more place the key lives: destroy it when done.
    Combine(CombineArgs),
    /// Proactive refresh, step 1 on each share's node: deal a sharing of zero to every holder
    /// (a public file, its parts encrypted to each holder's share).
    RefreshDeal(RefreshDealArgs),
    /// Proactive refresh, step 2 on each share's node: the new share from one deal of every
    /// holder. The group key stays; old shares no longer combine with new ones.
    RefreshApply(RefreshApplyArgs),
    /// Adding, replacing or removing a node (or a new threshold), step 1 on each new node: a
    /// recipient key (keystore and password) that its sub-shares are encrypted to. Its public
    /// key is printed for the dealers; holders that stay need none.
    ReshareRecipient(ReshareRecipientArgs),
    /// Step 2 on at least T current holders: deal a sharing of this share to the new holders
    /// (a public file, its parts encrypted to each new holder).
    ReshareDeal(ReshareDealArgs),
    /// Step 3 on every new holder: its new share from the same set of deals. The group key
    /// stays; every share changes, and old shares no longer combine with new ones.
    ReshareApply(ReshareApplyArgs),
}

#[derive(Args, Debug)]
pub struct ReshareRecipientArgs {
    /// A new folder: `keystore.json` and `password.txt` of the recipient key.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// pbkdf2 rounds of the keystore (EIP-2335's default; lower only for tests).
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u32).range(1024..))]
    pub pbkdf2_rounds: u32,
}

#[derive(Args, Debug)]
pub struct ReshareDealArgs {
    /// This node's share keystore.
    #[arg(long, value_name = "FILE")]
    pub share: PathBuf,
    /// Its password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// Shares the new holders need to sign.
    #[arg(long, value_name = "T")]
    pub threshold: usize,
    /// New holders, numbered 1 to N.
    #[arg(long, value_name = "N")]
    pub shares: usize,
    /// A new holder's recipient key, `INDEX=PUBKEY` (repeat). An index without one is the node
    /// that holds that share today, its sub-share encrypted to its current share.
    #[arg(long = "recipient", value_name = "INDEX=PUBKEY")]
    pub recipients: Vec<String>,
    /// Where to write the deal (a new file).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReshareApplyArgs {
    /// This node's recipient keystore, or, for a holder that stays, its current share keystore.
    #[arg(long, value_name = "FILE")]
    pub keystore: PathBuf,
    /// Its password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// This node's index among the new holders.
    #[arg(long, value_name = "I")]
    pub index: u32,
    /// The group public key (the validator) the new share is for.
    #[arg(long, value_name = "PUBKEY")]
    pub group_public_key: String,
    /// A deal (repeat: at least T current holders', the same set on every new holder).
    #[arg(long = "deal", value_name = "FILE", required = true)]
    pub deals: Vec<PathBuf>,
    /// A new folder: `keystore.json` and `password.txt` of the new share, `group.json`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// pbkdf2 rounds of the new share keystore (EIP-2335's default; lower only for tests).
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u32).range(1024..))]
    pub pbkdf2_rounds: u32,
}

#[derive(Args, Debug)]
pub struct RefreshDealArgs {
    /// This node's share keystore.
    #[arg(long, value_name = "FILE")]
    pub share: PathBuf,
    /// Its password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// Where to write the deal (a new file).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct RefreshApplyArgs {
    /// This node's share keystore.
    #[arg(long, value_name = "FILE")]
    pub share: PathBuf,
    /// Its password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// A deal (repeat: one from every holder, this one's included).
    #[arg(long = "deal", value_name = "FILE", required = true)]
    pub deals: Vec<PathBuf>,
    /// A new folder: `keystore.json` and `password.txt` of the new share, `group.json`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// pbkdf2 rounds of the new share keystore (EIP-2335's default; lower only for tests).
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u32).range(1024..))]
    pub pbkdf2_rounds: u32,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The keystore to split (with --password-file).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "generate",
        conflicts_with = "generate",
        requires = "password_file"
    )]
    pub keystore: Option<PathBuf>,
    /// The keystore's password (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Split a new random key instead (its public key is printed; it never exists whole on disk).
    #[arg(long)]
    pub generate: bool,
    /// Shares needed to sign (more than half of --shares keeps a minority from signing).
    #[arg(long, value_name = "T")]
    pub threshold: usize,
    /// Shares made (at most 255).
    #[arg(long, value_name = "N")]
    pub shares: usize,
    /// A new folder: `share-<i>/keystore.json` and `share-<i>/password.txt` for each share, and
    /// `group.json` (group public key, threshold, verification vector) for coordinators.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// pbkdf2 rounds of the share keystores (EIP-2335's default; lower only for tests).
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u32).range(1024..))]
    pub pbkdf2_rounds: u32,
}

#[derive(Args, Debug)]
pub struct CombineArgs {
    /// A share keystore and its password file, `KEYSTORE:PASSWORD_FILE` (repeat T times).
    #[arg(long = "share", value_name = "KEYSTORE:PASSWORD_FILE", required = true)]
    pub shares: Vec<String>,
    /// Where to write the recovered keystore (a new file).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// The password to encrypt it with (first line).
    #[arg(long, value_name = "FILE")]
    pub output_password_file: PathBuf,
    /// pbkdf2 rounds of the recovered keystore (EIP-2335's default; lower only for tests).
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u32).range(1024..))]
    pub pbkdf2_rounds: u32,
}

/// An option's value that must not reach `Debug` output or stay in memory (a secret).
#[derive(Clone)]
pub struct Hidden(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Hidden(zeroize::Zeroizing::new(s.to_string())))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(
        long,
        env = "PALISADE_HTTP_HOST",
        default_value = "127.0.0.1",
        alias = "http-listen-host"
    )]
    pub http_host: String,

    /// Listen port (0 = pick a free port and log it).
    #[arg(long, env = "PALISADE_HTTP_PORT", default_value_t = 9000, alias = "http-listen-port")]
    pub http_port: u16,

    /// Folder of EIP-2335 JSON keystores (`*.json`; other JSON files are skipped with a warning).
    #[arg(long, env = "PALISADE_KEYSTORES_PATH", value_name = "DIR")]
    pub keystores_path: Option<PathBuf>,

    /// Folder with one password file per keystore: `<keystore file stem>.txt`.
    #[arg(long, env = "PALISADE_KEYSTORES_PASSWORDS_PATH", value_name = "DIR")]
    pub keystores_passwords_path: Option<PathBuf>,

    /// One password for every keystore in --keystores-path.
    #[arg(long, env = "PALISADE_KEYSTORES_PASSWORD_FILE", value_name = "FILE")]
    pub keystores_password_file: Option<PathBuf>,

    /// Folder of Web3Signer-style YAML key definitions: `file-keystore`, `file-raw`,
    /// `aws-secret`, `hashicorp` (Vault KV v2), `azure-secret`.
    #[arg(long, env = "PALISADE_KEY_CONFIG_PATH", value_name = "DIR", alias = "key-store-path")]
    pub key_config_path: Option<PathBuf>,

    /// The fleet secret (at least 32 bytes; `openssl rand -hex 32`), the same on every replica
    /// of a PostgreSQL fleet: Key Manager imports are kept in the database for every replica,
    /// their passwords sealed with it. Never written to the database.
    #[arg(long, env = "PALISADE_SHARED_KEYSTORE_SECRET_FILE", value_name = "FILE")]
    pub shared_keystore_secret_file: Option<PathBuf>,

    /// Reload every key source this often (as `POST /reload` and SIGHUP do); off by default.
    #[arg(long, env = "PALISADE_KEYS_REFRESH_SECS", value_name = "SECS")]
    pub keys_refresh_secs: Option<u64>,

    /// Load every AWS Secrets Manager secret matching the filters below (Web3Signer's bulk
    /// loading): one key per secret, or several, one per line.
    #[arg(long, env = "PALISADE_AWS_SECRETS_ENABLED", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub aws_secrets_enabled: bool,

    /// `SPECIFIED` (the access key options below) or `ENVIRONMENT` (the AWS SDKs' default
    /// chain: environment, profile, container, instance role).
    #[arg(long, env = "PALISADE_AWS_SECRETS_AUTH_MODE", default_value = "SPECIFIED", value_name = "MODE",
          value_parser = ["SPECIFIED", "ENVIRONMENT"], ignore_case = true)]
    pub aws_secrets_auth_mode: String,

    #[arg(long, env = "PALISADE_AWS_SECRETS_ACCESS_KEY_ID", value_name = "ID")]
    pub aws_secrets_access_key_id: Option<String>,

    /// Prefer the environment variable (the command line is visible to every local user).
    #[arg(
        long,
        env = "PALISADE_AWS_SECRETS_SECRET_ACCESS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub aws_secrets_secret_access_key: Option<Hidden>,

    #[arg(long, env = "PALISADE_AWS_SECRETS_REGION", value_name = "REGION")]
    pub aws_secrets_region: Option<String>,

    /// Another endpoint than `https://secretsmanager.<region>.amazonaws.com` (a VPC endpoint,
    /// LocalStack, moto).
    #[arg(long, env = "PALISADE_AWS_ENDPOINT_OVERRIDE", value_name = "URL")]
    pub aws_endpoint_override: Option<String>,

    /// Only secrets whose name starts with one of these (comma separated).
    #[arg(
        long,
        env = "PALISADE_AWS_SECRETS_PREFIXES_FILTER",
        value_delimiter = ',',
        value_name = "PREFIX,.."
    )]
    pub aws_secrets_prefixes_filter: Vec<String>,

    /// Only secrets with this tag (`NAME=VALUE`, or `NAME` for any value); repeatable, or
    /// several separated by `|`.
    #[arg(
        long = "aws-secrets-tag",
        env = "PALISADE_AWS_SECRETS_TAG",
        value_delimiter = '|',
        value_name = "NAME=VALUE"
    )]
    pub aws_secrets_tags: Vec<String>,

    /// Web3Signer's older form: only secrets with a tag named one of these (comma separated).
    #[arg(
        long,
        env = "PALISADE_AWS_SECRETS_TAG_NAMES_FILTER",
        value_delimiter = ',',
        value_name = "NAME,.."
    )]
    pub aws_secrets_tag_names_filter: Vec<String>,

    /// Web3Signer's older form: only secrets with a tag valued one of these (comma separated).
    #[arg(
        long,
        env = "PALISADE_AWS_SECRETS_TAG_VALUES_FILTER",
        value_delimiter = ',',
        value_name = "VALUE,.."
    )]
    pub aws_secrets_tag_values_filter: Vec<String>,

    /// Slashing-protection database: `postgres://...` for shared (multi-replica) protection,
    /// `sqlite://PATH` for one host.
    #[arg(long, env = "PALISADE_DATABASE_URL", default_value = "sqlite://palisade.sqlite",
          alias = "slashing-protection-db-url", value_parser = database_url)]
    pub database_url: String,

    /// The PostgreSQL password, read from this file (first line; keeps it out of the URL, the
    /// command line and the environment).
    #[arg(long, env = "PALISADE_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The PostgreSQL password itself, for a Web3Signer configuration file
    /// (`slashing-protection-db-password`) or the environment; on the command line every
    /// local user can read it (warned). Prefer --database-password-file.
    #[arg(
        long,
        env = "PALISADE_DATABASE_PASSWORD",
        value_name = "PASSWORD",
        alias = "slashing-protection-db-password",
        conflicts_with = "database_password_file"
    )]
    pub database_password: Option<Hidden>,

    /// The PostgreSQL role, when not in the URL (overrides the URL's).
    #[arg(
        long,
        env = "PALISADE_DATABASE_USERNAME",
        value_name = "ROLE",
        alias = "slashing-protection-db-username"
    )]
    pub database_username: Option<String>,

    /// `mainnet`, `hoodi`, `sepolia`, `holesky`, `gnosis`, `chiado`, `minimal`, or a consensus-specs config YAML.
    #[arg(long, env = "PALISADE_NETWORK", default_value = "mainnet", value_name = "NAME|FILE")]
    pub network: String,

    /// Pin the chain; requests for another genesis validators root are refused.
    /// Default: the network's own root, else pinned by the database on first use.
    #[arg(long, env = "PALISADE_GENESIS_VALIDATORS_ROOT", value_name = "HEX")]
    pub genesis_validators_root: Option<Root>,

    /// Folder for what this replica keeps itself: keystores imported through the Key Manager
    /// API (with their passwords, mode 0600) in `keymanager-keystores/`.
    #[arg(long, env = "PALISADE_DATA_PATH", default_value = ".", value_name = "DIR")]
    pub data_path: PathBuf,

    /// Unix time of the chain's genesis, for the clock window (default: the network's own,
    /// or MIN_GENESIS_TIME + GENESIS_DELAY of a config file).
    #[arg(long, env = "PALISADE_GENESIS_TIME", value_name = "UNIX_SECONDS")]
    pub genesis_time: Option<u64>,

    /// How far ahead of this host's clock the start of a message's slot may lie (clock skew
    /// between hosts); selection proofs may also be two epochs ahead. Blocks, attestations and
    /// the other slot-bound types further ahead are refused. `off` turns the window off.
    #[arg(long, env = "PALISADE_FUTURE_TOLERANCE_SECS", default_value = "30", value_name = "SECS|off",
          value_parser = parse_tolerance)]
    pub future_tolerance_secs: Tolerance,

    /// Bearer token for the admin and Key Manager endpoints; created (mode 0600, random)
    /// if missing.
    #[arg(
        long,
        env = "PALISADE_API_TOKEN_FILE",
        default_value = "palisade-api-token.txt",
        value_name = "FILE"
    )]
    pub api_token_file: PathBuf,

    /// Serve the Commit-Boost signer API (`/signer/v1/*`: module keys, signatures under
    /// Commit-Boost's own domain, proxy keys) to the modules of --commit-boost-modules-file.
    #[arg(long, env = "PALISADE_COMMIT_BOOST_API_ENABLED", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          requires_all = ["commit_boost_modules_file", "proxy_keystores_password_file"])]
    pub commit_boost_api_enabled: bool,

    /// The Commit-Boost modules: id, signing id, JWT secret and the consensus keys each may
    /// use (YAML; see the README's "Commit-Boost" section).
    #[arg(long, env = "PALISADE_COMMIT_BOOST_MODULES_FILE", value_name = "FILE")]
    pub commit_boost_modules_file: Option<PathBuf>,

    /// Where proxy keys are kept, encrypted (Web3Signer's layout). Default: `proxy-keystores`
    /// in --data-path.
    #[arg(long, env = "PALISADE_PROXY_KEYSTORES_PATH", value_name = "DIR")]
    pub proxy_keystores_path: Option<PathBuf>,

    /// The password proxy keystores are encrypted with (on PostgreSQL, every replica's must be
    /// the same: they share the keys).
    #[arg(long, env = "PALISADE_PROXY_KEYSTORES_PASSWORD_FILE", value_name = "FILE")]
    pub proxy_keystores_password_file: Option<PathBuf>,

    /// Serve Prometheus metrics at /metrics.
    #[arg(long, env = "PALISADE_METRICS", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", alias = "metrics-enabled")]
    pub metrics: bool,

    /// Serve /metrics on its own port (and not on the signing port): scrapers then need no
    /// access to the signing port, and have their own host allow-list. `0` picks a free port.
    #[arg(long, env = "PALISADE_METRICS_PORT", value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// The metrics listener's address (with --metrics-port).
    #[arg(
        long,
        env = "PALISADE_METRICS_HOST",
        default_value = "127.0.0.1",
        value_name = "ADDR"
    )]
    pub metrics_host: String,

    /// Host names the metrics listener answers to, comma separated; `*` for any. Default:
    /// localhost, 127.0.0.1, ::1 and --metrics-host.
    #[arg(
        long,
        env = "PALISADE_METRICS_HOST_ALLOWLIST",
        value_name = "HOST,..",
        value_delimiter = ','
    )]
    pub metrics_host_allowlist: Vec<String>,

    /// Serve HTTPS with this certificate chain (PEM). Plain HTTP when not set.
    #[arg(long, env = "PALISADE_TLS_CERT_FILE", value_name = "PEM", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "PALISADE_TLS_KEY_FILE", value_name = "PEM", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Require a client certificate signed by this CA (PEM) on every connection; its subject
    /// is recorded with every signed block and attestation.
    #[arg(
        long,
        env = "PALISADE_TLS_CLIENT_CA_FILE",
        value_name = "PEM",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Proxies (addresses or CIDRs, comma separated) whose word about the real client is
    /// taken: the PROXY protocol v2 header, else the one header --trusted-proxy-header names.
    /// From any other peer these are ignored. Trusted proxies have no per-client connection cap.
    #[arg(
        long,
        env = "PALISADE_TRUSTED_PROXIES",
        value_name = "CIDR,..",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// The forwarding header the trusted proxies set: `x-forwarded-for` (HAProxy's
    /// `option forwardfor`), `forwarded`, `x-real-ip` (nginx), or `none` (PROXY protocol only).
    /// Others a client adds are ignored.
    #[arg(
        long,
        env = "PALISADE_TRUSTED_PROXY_HEADER",
        default_value = "x-forwarded-for",
        value_name = "HEADER"
    )]
    pub trusted_proxy_header: crate::http::client::ForwardingHeader,

    /// Host names (the `Host` header, without port) this signer answers to, comma separated;
    /// `*` for any. Default: localhost, 127.0.0.1, ::1 and --http-host. Refuses DNS-rebinding
    /// pages; behind a balancer or on a LAN add the names clients use.
    #[arg(
        long,
        env = "PALISADE_HTTP_HOST_ALLOWLIST",
        value_name = "HOST,..",
        value_delimiter = ','
    )]
    pub http_host_allowlist: Vec<String>,

    /// Web origins allowed to call this signer from a browser (CORS), comma separated; `*` for
    /// any. Default none: a request carrying any `Origin` header is refused (validator clients
    /// send none).
    #[arg(
        long,
        env = "PALISADE_HTTP_CORS_ORIGINS",
        value_name = "ORIGIN,..",
        value_delimiter = ','
    )]
    pub http_cors_origins: Vec<String>,

    /// Sign only these types (`ATTESTATION,BLOCK_V2,...`, as in the signing API); default all.
    #[arg(
        long,
        env = "PALISADE_ALLOW_SIGNING_TYPES",
        value_name = "TYPE,..",
        value_delimiter = ','
    )]
    pub allow_signing_types: Vec<String>,

    /// Never sign these types, e.g. `VOLUNTARY_EXIT,DEPOSIT`.
    #[arg(
        long,
        env = "PALISADE_DENY_SIGNING_TYPES",
        value_name = "TYPE,..",
        value_delimiter = ','
    )]
    pub deny_signing_types: Vec<String>,

    /// Require `Authorization: Bearer <token>` on the signing routes too, with the token in
    /// this file (for clients that can send one; mTLS with --tls-client-ca-file is the other way).
    #[arg(long, env = "PALISADE_SIGNING_TOKEN_FILE", value_name = "FILE")]
    pub signing_token_file: Option<PathBuf>,

    /// A client must send its first request (TLS handshake included) within this time of
    /// connecting, and each later request's headers within it of their first byte.
    #[arg(
        long,
        env = "PALISADE_HTTP_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub http_header_timeout_secs: u64,

    /// ... and its body within this time.
    #[arg(
        long,
        env = "PALISADE_HTTP_BODY_TIMEOUT_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub http_body_timeout_secs: u64,

    /// A connection with no request for this long after its last one is closed (longer than
    /// validator clients' own keep-alive, 4 to 90 s, so they close first; sent to clients as
    /// `Keep-Alive: timeout=N`).
    #[arg(
        long,
        env = "PALISADE_HTTP_IDLE_TIMEOUT_SECS",
        alias = "idle-connection-timeout-seconds",
        default_value_t = 120,
        value_name = "SECS"
    )]
    pub http_idle_timeout_secs: u64,

    /// Open connections at most. When all are open, a new one takes the place of the one with
    /// least claim (never completed a request, else idle longest; never one with a request in
    /// flight or a client certificate or token): `palisade_http_connections_evicted_total`.
    /// Default: half the open-file limit (raised to its hard limit at start), at most 4096.
    #[arg(long, env = "PALISADE_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,

    /// Open connections one client address may hold; beyond it a new one takes the place of
    /// that address's own connection with least claim. Trusted proxies are exempt. Default:
    /// half of --http-max-connections.
    #[arg(long, env = "PALISADE_HTTP_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub http_max_connections_per_client: Option<usize>,

    /// Request bodies in memory at once, across all connections (a quarter kept for bodies
    /// under 64 KiB, which every signing request since Bellatrix is); beyond it a request is
    /// answered 503 unread. Admin requests, read only once their token is accepted, are not
    /// counted.
    #[arg(long, env = "PALISADE_HTTP_BODY_BUDGET_MB", default_value_t = 64, value_name = "MIB")]
    pub http_body_budget_mb: u64,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "PALISADE_HTTP2_MAX_STREAMS", default_value_t = 128, value_name = "N")]
    pub http2_max_streams: u32,

    /// PostgreSQL connections per replica (default: 4 per core).
    #[arg(long, env = "PALISADE_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,

    /// How long one slashing-protection check may take before the signing is refused (503).
    /// The default leaves a validator client time to try another replica within its own
    /// timeout: Nimbus gives a remote signer 3 s, Teku 5 s, Lighthouse 12 s.
    #[arg(
        long,
        env = "PALISADE_DATABASE_TIMEOUT_MS",
        default_value_t = 1500,
        value_name = "MS"
    )]
    pub database_timeout_ms: u64,

    /// How long startup waits for the database to become reachable.
    #[arg(
        long,
        env = "PALISADE_DATABASE_CONNECT_TIMEOUT_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub database_connect_timeout_secs: u64,

    /// How long blocks and attestations are held (503) after the PostgreSQL database turns
    /// out to be another one than before (restored from a backup, a standby promoted), while every replica checks it against what it signed and writes back what
    /// it is missing. 0 turns the hold off.
    #[arg(
        long,
        env = "PALISADE_DATABASE_CHANGE_HOLD_SECS",
        default_value_t = 4,
        value_name = "SECS"
    )]
    pub database_change_hold_secs: u64,

    /// Ready (for /readyz) with at least this many usable keys. Default: every configured key
    /// must have loaded (a wrong password makes the replica not ready), and at least one (a replica
    /// without keys is not ready, and says so at startup; 0 to allow it).
    #[arg(long, env = "PALISADE_READY_MIN_KEYS", value_name = "N")]
    pub ready_min_keys: Option<usize>,

    /// The memory scrypt may use at once while keystores are decrypted on every core (the
    /// largest keystore allowed needs 1 GiB; the EIP-2335 default 256 MiB).
    #[arg(long, env = "PALISADE_KDF_MEMORY_MB", default_value_t = 1024, value_name = "MB")]
    pub kdf_memory_mb: u64,

    /// How long a request for a key that is still being decrypted waits before a 503.
    #[arg(long, env = "PALISADE_KEY_WAIT_MS", default_value_t = 5000, value_name = "MS")]
    pub key_wait_ms: u64,

    /// Prune signing history (`--prune-enabled=false` keeps it all).
    #[arg(
        long,
        env = "PALISADE_PRUNE_ENABLED",
        alias = "slashing-protection-pruning-enabled",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub prune_enabled: bool,

    /// Signing history kept behind each validator's highest epoch (0 = keep everything).
    /// Protection itself never needs it: it decides on each validator's highest block slot,
    /// source and target (and their roots), which are never pruned. The history recognises
    /// an older message asked for again (signed again, not refused) and is the audit trail
    /// (who asked, from where). 250 epochs is Web3Signer's default: a little over a day.
    #[arg(
        long,
        env = "PALISADE_PRUNE_EPOCHS_TO_KEEP",
        alias = "slashing-protection-pruning-epochs-to-keep",
        default_value_t = 250,
        value_name = "EPOCHS"
    )]
    pub prune_epochs_to_keep: u64,

    /// Slots an epoch for pruning block history. Default: the network's.
    #[arg(
        long,
        env = "PALISADE_PRUNE_SLOTS_PER_EPOCH",
        value_name = "SLOTS",
        alias = "slashing-protection-pruning-slots-per-epoch"
    )]
    pub prune_slots_per_epoch: Option<u64>,

    /// Prune once at startup (in the background) too; otherwise the first pruning is one
    /// --prune-interval-secs after the start (Web3Signer's default).
    #[arg(
        long,
        env = "PALISADE_PRUNE_AT_BOOT",
        alias = "slashing-protection-pruning-at-boot-enabled",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub prune_at_boot: bool,

    /// Start even when the database's settings can lose committed records (fsync, synchronous_commit
    /// or full_page_writes off). Never in production: a lost record can get a validator slashed.
    #[arg(long, env = "PALISADE_ALLOW_UNSAFE_DATABASE_DURABILITY")]
    pub allow_unsafe_database_durability: bool,

    /// How often history is pruned.
    #[arg(
        long,
        env = "PALISADE_PRUNE_INTERVAL_SECS",
        default_value_t = 3600,
        value_name = "SECS"
    )]
    pub prune_interval_secs: u64,

    /// Web3Signer's pruning interval, in hours; overrides --prune-interval-secs.
    #[arg(
        long = "slashing-protection-pruning-interval",
        value_name = "HOURS",
        hide = true,
        conflicts_with = "prune_interval_secs"
    )]
    pub prune_interval_hours: Option<u64>,
}

/// A database URL; a Web3Signer JDBC URL (`jdbc:postgresql://...`) is taken as the
/// PostgreSQL URL inside it.
fn database_url(s: &str) -> Result<String, String> {
    Ok(s.strip_prefix("jdbc:").unwrap_or(s).to_string())
}

/// A tolerance in seconds, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tolerance(pub Option<u64>);

fn parse_tolerance(s: &str) -> Result<Tolerance, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Tolerance(None));
    }
    crate::types::parse_u64_decimal(s).map(|v| Tolerance(Some(v)))
}

/// The slashing-protection database of a `slashing-protection` command: as for `serve`, with
/// the same defaults and environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `postgres://...` or `sqlite://PATH` (the default is `serve`'s).
    #[arg(long, env = "PALISADE_DATABASE_URL", default_value = "sqlite://palisade.sqlite",
          alias = "slashing-protection-db-url", value_parser = database_url)]
    pub database_url: String,
    /// The PostgreSQL password, read from this file (first line).
    #[arg(long, env = "PALISADE_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The PostgreSQL password itself, for a Web3Signer configuration file
    /// (`slashing-protection-db-password`) or the environment; on the command line every
    /// local user can read it (warned). Prefer --database-password-file.
    #[arg(
        long,
        env = "PALISADE_DATABASE_PASSWORD",
        value_name = "PASSWORD",
        alias = "slashing-protection-db-password",
        conflicts_with = "database_password_file"
    )]
    pub database_password: Option<Hidden>,
    /// The PostgreSQL role, when not in the URL.
    #[arg(
        long,
        env = "PALISADE_DATABASE_USERNAME",
        value_name = "ROLE",
        alias = "slashing-protection-db-username"
    )]
    pub database_username: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SlashingProtectionCommand {
    /// Import an EIP-3076 interchange file (all or nothing; merges to the highest values).
    Import {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The interchange JSON file.
        #[arg(long, value_name = "FILE.json")]
        from: PathBuf,
        /// The network the signer serves (as for `serve`): a file for another chain is refused.
        /// Without it (or --genesis-validators-root) the database's own pin decides, and an
        /// unpinned database is pinned to the file's chain.
        #[arg(long, env = "PALISADE_NETWORK", value_name = "NAME|FILE")]
        network: Option<String>,
        /// The chain the signer serves, overriding the network's root.
        #[arg(long, env = "PALISADE_GENESIS_VALIDATORS_ROOT", value_name = "HEX")]
        genesis_validators_root: Option<Root>,
    },
    /// Set validators' watermarks to given values, lowering included: the way out of a key
    /// bricked by a message signed far in the future. Audited; without --confirm it only shows
    /// what it would do. Use the admin API of a running signer for an SQLite database.
    Repair(Box<RepairArgs>),
    /// Show, set or clear the high watermark: nothing at or above it is signed.
    HighWatermark {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Blocks at or above this slot are refused.
        #[arg(long, requires = "epoch", conflicts_with = "clear")]
        slot: Option<Slot>,
        /// Attestations with a target at or above this epoch are refused.
        #[arg(long, requires = "slot", conflicts_with = "clear")]
        epoch: Option<Epoch>,
        /// Remove it.
        #[arg(long)]
        clear: bool,
        /// Only for these validators (repeatable); default all.
        #[arg(long, value_name = "0x..")]
        pubkey: Vec<PublicKey>,
    },
    /// Export slashing-protection data as EIP-3076 interchange JSON.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Output file (`-` for standard output).
        #[arg(long, value_name = "FILE.json")]
        to: PathBuf,
        /// Only these validators (repeatable).
        #[arg(long, value_name = "0x..")]
        pubkey: Vec<PublicKey>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RepairArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The validators to repair (repeatable).
    #[arg(long, value_name = "0x..", required = true)]
    pub pubkey: Vec<PublicKey>,
    /// The new block watermark: the highest block slot taken as signed.
    #[arg(long)]
    pub block_slot: Option<Slot>,
    /// The new attestation source watermark (with --attestation-target).
    #[arg(long, requires = "attestation_target")]
    pub attestation_source: Option<Epoch>,
    /// The new attestation target watermark (with --attestation-source).
    #[arg(long, requires = "attestation_source")]
    pub attestation_target: Option<Epoch>,
    /// Why: kept with the repair in the database.
    #[arg(long)]
    pub reason: String,
    /// Apply it (without, only show what would change).
    #[arg(long)]
    pub confirm: bool,
    /// Also discard messages at slots that have passed (they may have been broadcast:
    /// signing below them again may be slashable).
    #[arg(long)]
    pub discard_past_messages: bool,
    /// The network, for the wall clock that tells future messages from past ones.
    #[arg(long, env = "PALISADE_NETWORK", default_value = "mainnet", value_name = "NAME|FILE")]
    pub network: String,
    /// Unix time of the chain's genesis (default: the network's).
    #[arg(long, env = "PALISADE_GENESIS_TIME", value_name = "UNIX_SECONDS")]
    pub genesis_time: Option<u64>,
}
