//! Which message types may be signed: a signer-wide policy (`--allow-signing-types`,
//! `--deny-signing-types`) narrowed per key by its YAML definition. An operator who never
//! exits or deposits through the signer can refuse VOLUNTARY_EXIT and DEPOSIT outright.

use std::fmt;

use super::SignType;

/// A set of signing types (room for 32).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeSet(u32);

impl TypeSet {
    pub const ALL: TypeSet = TypeSet((1 << SignType::ALL.len()) - 1);
    pub const NONE: TypeSet = TypeSet(0);

    fn bit(t: SignType) -> u32 {
        1 << SignType::ALL
            .iter()
            .position(|x| *x == t)
            .expect("listed in SignType::ALL")
    }

    pub fn contains(self, t: SignType) -> bool {
        self.0 & Self::bit(t) != 0
    }

    pub fn minus(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 & !other.0)
    }

    pub fn and(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 & other.0)
    }

    /// Type names as the signing API spells them (`ATTESTATION`, `VOLUNTARY_EXIT`, ...),
    /// case-insensitive. An unknown name is an error that lists the known ones.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<TypeSet, String> {
        let mut set = TypeSet::NONE;
        for name in names {
            let name = name.as_ref().trim();
            if name.is_empty() {
                continue;
            }
            let t = SignType::ALL
                .iter()
                .find(|t| t.as_str().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let known: Vec<_> = SignType::ALL.iter().map(|t| t.as_str()).collect();
                    format!("unknown signing type `{name}` (known: {})", known.join(", "))
                })?;
            set.0 |= Self::bit(*t);
        }
        Ok(set)
    }

    /// Allowed = `allow` (everything when empty) minus `deny`.
    pub fn from_lists<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Result<TypeSet, String> {
        let allowed = if allow.iter().all(|s| s.as_ref().trim().is_empty()) {
            TypeSet::ALL
        } else {
            TypeSet::parse(allow)?
        };
        Ok(allowed.minus(TypeSet::parse(deny)?))
    }
}

impl fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_set()
            .entries(SignType::ALL.iter().filter(|t| self.contains(**t)).map(|t| t.as_str()))
            .finish()
    }
}

/// Which policy refused a type: the message says where to change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Signer,
    Key(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Scope::Signer => f.write_str("by this signer (--allow-signing-types / --deny-signing-types)"),
            Scope::Key(label) => write!(f, "for this key by its definition {label}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_minus_deny_case_insensitive() {
        let s = TypeSet::from_lists(&["attestation", "BLOCK_V2", "VOLUNTARY_EXIT"], &["voluntary_exit"]).unwrap();
        assert!(s.contains(SignType::Attestation) && s.contains(SignType::BlockV2));
        assert!(!s.contains(SignType::VoluntaryExit) && !s.contains(SignType::Deposit));
        let all_but = TypeSet::from_lists::<&str>(&[], &["DEPOSIT"]).unwrap();
        assert!(!all_but.contains(SignType::Deposit));
        assert!(
            SignType::ALL
                .iter()
                .filter(|t| **t != SignType::Deposit)
                .all(|t| all_but.contains(*t))
        );
        let e = TypeSet::parse(&["EXIT"]).unwrap_err();
        assert!(e.contains("`EXIT`") && e.contains("VOLUNTARY_EXIT"), "{e}");
    }
}
