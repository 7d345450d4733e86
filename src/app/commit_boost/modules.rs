//! `--commit-boost-modules-file`: the Commit-Boost modules allowed to ask for signatures, each
//! with its signing id (bound into every root it has signed), its JWT secret and the
//! consensus keys it may use.
//!
//! ```yaml
//! modules:
//!   - id: DA_COMMIT
//!     signing_id: "0x6a33a23ef26a4836979edff86c493a69b26ccf0b4a16491a815a13787657431b"
//!     jwt_secret_file: /etc/palisade/da-commit.jwt
//!     consensus_keys: all            # or a list of 0x public keys
//!     api: commit-boost              # or web3signer (see `Api`)
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::types::{PublicKey, Root};

/// A module's secret: never printed.
pub struct JwtSecret(Zeroizing<Vec<u8>>);

impl JwtSecret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// Which consensus keys a module may sign with or make proxies for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    All,
    Only(HashSet<PublicKey>),
}

#[derive(Debug)]
pub struct Module {
    pub id: String,
    pub signing_id: Root,
    pub secret: JwtSecret,
    pub keys: Allowed,
    pub api: Api,
}

/// Which form of the API a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Current Commit-Boost: JWTs bound to the route and body; roots bound to the module's
    /// signing id, a nonce and the chain.
    CommitBoost,
    /// Web3Signer's (Commit-Boost before v0.8): its secret itself or a JWT as the bearer, the
    /// module's root signed as it is, secp256k1 proxies by their compressed keys. Such a module
    /// can have any Commit-Boost-domain root signed (another module's commitment, a delegation),
    /// so its consensus keys may be no other module's.
    Web3Signer,
}

impl Module {
    fn shares_keys_with(&self, other: &Module) -> bool {
        match (&self.keys, &other.keys) {
            (Allowed::Only(a), Allowed::Only(b)) => !a.is_disjoint(b),
            (Allowed::Only(a), Allowed::All) | (Allowed::All, Allowed::Only(a)) => !a.is_empty(),
            (Allowed::All, Allowed::All) => true,
        }
    }

    pub fn may_use(&self, key: &PublicKey) -> bool {
        match &self.keys {
            Allowed::All => true,
            Allowed::Only(set) => set.contains(key),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    modules: Vec<RawModule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    id: String,
    signing_id: String,
    #[serde(default)]
    jwt_secret: Option<Zeroizing<String>>,
    #[serde(default)]
    jwt_secret_file: Option<PathBuf>,
    consensus_keys: serde_yaml_ng::Value,
    #[serde(default)]
    api: Option<String>,
}

/// The modules, by id.
#[derive(Debug, Default)]
pub struct Modules(Vec<Module>);

impl Modules {
    pub fn get(&self, id: &str) -> Option<&Module> {
        self.0.iter().find(|m| m.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|m| m.id.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Module> {
        self.0.iter()
    }

    /// Reads and checks the file; every error names the file and the module or field.
    pub fn load(path: &Path) -> Result<Modules, String> {
        let at = |m: String| format!("--commit-boost-modules-file {}: {m}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let raw: RawFile = serde_yaml_ng::from_str(&text).map_err(|e| at(e.to_string()))?;
        let mut modules = Vec::new();
        for (i, m) in raw.modules.into_iter().enumerate() {
            let name = format!("modules[{i}] ({:?})", m.id);
            let module = Self::module(m, path).map_err(|e| at(format!("{name}: {e}")))?;
            if modules.iter().any(|o: &Module| o.id == module.id) {
                return Err(at(format!("{name}: the id is used twice")));
            }
            if modules.iter().any(|o: &Module| o.signing_id == module.signing_id) {
                return Err(at(format!("{name}: signing_id is another module's")));
            }
            if modules
                .iter()
                .any(|o: &Module| o.secret.bytes() == module.secret.bytes())
            {
                return Err(at(format!("{name}: the JWT secret is another module's")));
            }
            modules.push(module);
        }
        if modules.is_empty() {
            return Err(at("no modules".into()));
        }
        for m in modules.iter().filter(|m| m.api == Api::Web3Signer) {
            if let Some(other) = modules.iter().find(|o| o.id != m.id && m.shares_keys_with(o)) {
                return Err(at(format!(
                    "{}: a module with `api: web3signer` can have any Commit-Boost root signed, so it may share no consensus key with another module ({} does)",
                    m.id, other.id
                )));
            }
        }
        Ok(Modules(modules))
    }

    fn module(m: RawModule, path: &Path) -> Result<Module, String> {
        // The id names a folder of proxy keys and a metrics label.
        if m.id.is_empty()
            || m.id.len() > 64
            || !m
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("id: 1 to 64 letters, digits, `_` or `-`".into());
        }
        let signing_id: Root = m.signing_id.parse().map_err(|e| format!("signing_id: {e}"))?;
        if signing_id == Root::ZERO {
            return Err("signing_id: must not be zero".into());
        }
        let secret = match (m.jwt_secret, m.jwt_secret_file) {
            (Some(s), None) => Zeroizing::new(s.trim().as_bytes().to_vec()),
            (None, Some(file)) => {
                let file = if file.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(file)
                } else {
                    file
                };
                let bytes = crate::fsutil::read_access_file(&file, "jwt_secret_file").map_err(|e| e.to_string())?;
                let text = std::str::from_utf8(&bytes).map_err(|_| format!("{} is not text", file.display()))?;
                Zeroizing::new(text.trim().as_bytes().to_vec())
            }
            _ => return Err("exactly one of jwt_secret and jwt_secret_file".into()),
        };
        if secret.len() < 16 {
            return Err("the JWT secret must have at least 16 characters".into());
        }
        let api = match m.api.as_deref() {
            None | Some("commit-boost") => Api::CommitBoost,
            Some("web3signer") => Api::Web3Signer,
            Some(other) => {
                return Err(format!(
                    "api: `{}` is not commit-boost or web3signer",
                    other.escape_default()
                ));
            }
        };
        let keys = match m.consensus_keys {
            serde_yaml_ng::Value::String(s) if s == "all" => Allowed::All,
            serde_yaml_ng::Value::Sequence(items) => Allowed::Only(
                items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| "consensus_keys: public keys as text".to_string())?
                            .parse::<PublicKey>()
                            .map_err(|e| format!("consensus_keys: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err("consensus_keys: `all` or a list of public keys".into()),
        };
        Ok(Module {
            id: m.id,
            signing_id,
            secret: JwtSecret(secret),
            keys,
            api,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Modules, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("modules.yaml");
        std::fs::write(&p, text).unwrap();
        Modules::load(&p)
    }

    const ID: &str = "0x6a33a23ef26a4836979edff86c493a69b26ccf0b4a16491a815a13787657431b";

    #[test]
    fn a_module_file_loads_and_its_errors_name_the_field() {
        let m = load(&format!(
            "modules:\n  - id: DA_COMMIT\n    signing_id: \"{ID}\"\n    jwt_secret: a-secret-of-twenty-chars\n    consensus_keys: all\n"
        ))
        .unwrap();
        let da = m.get("DA_COMMIT").unwrap();
        assert_eq!(da.keys, Allowed::All);
        assert!(!format!("{da:?}").contains("a-secret-of"));
        let file = |id: &str, sid: &str, secret: &str, keys: &str| {
            format!(
                "modules:\n  - id: {id}\n    signing_id: \"{sid}\"\n    jwt_secret: {secret}\n    consensus_keys: {keys}\n"
            )
        };
        let good = "a-secret-of-twenty-chars";
        for (text, says) in [
            (file("a b", ID, good, "all"), "id: 1 to 64"),
            (file("x", "0x00", good, "all"), "signing_id"),
            (file("x", ID, "short", "all"), "at least 16"),
            (file("x", ID, good, "some"), "consensus_keys"),
            (file("x", ID, good, "[\"0x12\"]"), "consensus_keys"),
            (
                format!(
                    "{}    api: web3signer\n{}",
                    file("x", ID, good, "all"),
                    file("y", &ID.replace("a", "b"), "another-secret-of-twenty", "all").replace("modules:\n", "")
                ),
                "may share no consensus key",
            ),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(says) && e.contains("modules.yaml"), "{text}: {e}");
        }
    }
}
