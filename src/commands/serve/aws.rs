//! `--aws-secrets-*`: AWS Secrets Manager bulk loading's settings.

use anyhow::{anyhow, bail};

use crate::commands::cli::ServeArgs;
use crate::keys::sources::aws_bulk::AwsBulk;
use crate::keys::stores::aws::{CredentialSource, Credentials};

/// `--aws-secrets-*`: the bulk loading's settings, or `None` when it is off.
pub fn bulk(args: &ServeArgs) -> anyhow::Result<Option<AwsBulk>> {
    if !args.aws_secrets_enabled {
        return Ok(None);
    }
    let credentials = if args.aws_secrets_auth_mode.eq_ignore_ascii_case("ENVIRONMENT") {
        CredentialSource::Environment
    } else {
        match (&args.aws_secrets_access_key_id, &args.aws_secrets_secret_access_key) {
            (Some(id), Some(key)) => CredentialSource::Specified(Credentials {
                access_key_id: id.clone(),
                secret_access_key: key.0.clone(),
                session_token: None,
            }),
            _ => bail!(
                "--aws-secrets-auth-mode=SPECIFIED needs --aws-secrets-access-key-id and \
                 --aws-secrets-secret-access-key (or use ENVIRONMENT for the AWS default credential chain)"
            ),
        }
    };
    let region = match &args.aws_secrets_region {
        Some(r) => r.clone(),
        None => crate::keys::stores::aws::credentials::default_region()
            .ok_or_else(|| anyhow!("--aws-secrets-enabled needs --aws-secrets-region (or AWS_REGION)"))?,
    };
    let mut tag_keys = Vec::new();
    let mut tag_values = Vec::new();
    for t in args.aws_secrets_tags.iter().filter(|t| !t.is_empty()) {
        match t.split_once('=') {
            Some((k, v)) => {
                tag_keys.push(k.to_string());
                if !v.is_empty() {
                    tag_values.push(v.to_string());
                }
            }
            None => tag_keys.push(t.clone()),
        }
    }
    tag_keys.extend(
        args.aws_secrets_tag_names_filter
            .iter()
            .filter(|t| !t.is_empty())
            .cloned(),
    );
    tag_values.extend(
        args.aws_secrets_tag_values_filter
            .iter()
            .filter(|t| !t.is_empty())
            .cloned(),
    );
    Ok(Some(AwsBulk {
        credentials,
        region,
        endpoint_override: args.aws_endpoint_override.clone(),
        prefixes: args
            .aws_secrets_prefixes_filter
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
        tag_keys,
        tag_values,
    }))
}
