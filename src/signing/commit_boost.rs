//! Commit-Boost signer API bodies, parsed into typed requests before any key is touched.
//! Two dialects: current Commit-Boost (a route per key kind, a nonce, the module's signing id
//! and the chain id bound into the root) and Web3Signer's (one route with a `type` field, the
//! module's root signed as it is). Unknown fields are ignored, as both servers do.

use serde::Deserialize;

use crate::types::{PublicKey, Root, parse_hex_array};

/// Which key signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    Consensus(PublicKey),
    ProxyBls(PublicKey),
    /// A secp256k1 proxy by its 20-byte address or its 33-byte compressed public key.
    ProxyEcdsa(Vec<u8>),
}

impl KeyRef {
    pub fn describe(&self) -> String {
        match self {
            KeyRef::Consensus(p) | KeyRef::ProxyBls(p) => p.to_string(),
            KeyRef::ProxyEcdsa(b) => format!("0x{}", hex::encode(b)),
        }
    }
}

/// How the module's root becomes the signed root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Web3Signer / Commit-Boost before v0.8: `compute_signing_root(object_root, domain)`;
    /// a secp256k1 signature over SHA-256 of it, 64 bytes.
    Legacy,
    /// Current Commit-Boost: the root bound to module, nonce and chain; a secp256k1 signature
    /// over the root itself, 65 bytes with v.
    Current { nonce: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureRequest {
    pub key: KeyRef,
    pub object_root: Root,
    pub dialect: Dialect,
}

/// A current route's kind of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Consensus,
    ProxyBls,
    ProxyEcdsa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyScheme {
    Bls,
    Ecdsa,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    pub delegator: PublicKey,
    pub scheme: ProxyScheme,
}

fn hex_bytes(field: &str, s: &str, lens: &[usize]) -> Result<Vec<u8>, String> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let b = hex::decode(h).map_err(|e| format!("{field}: invalid hex: {e}"))?;
    if !lens.contains(&b.len()) {
        return Err(format!("{field}: expected {lens:?} bytes, got {}", b.len()));
    }
    Ok(b)
}

fn pubkey(field: &str, s: &str) -> Result<PublicKey, String> {
    let k = PublicKey(parse_hex_array(s).map_err(|e| format!("{field}: {e}"))?);
    k.validate_point().map_err(|e| format!("{field}: {e}"))?;
    Ok(k)
}

fn root(s: &str) -> Result<Root, String> {
    Ok(Root::from(
        parse_hex_array::<32>(s).map_err(|e| format!("object_root: {e}"))?,
    ))
}

/// `POST /signer/v1/request_signature/{bls,proxy-bls,proxy-ecdsa}`.
pub fn parse_current(route: Route, body: &[u8]) -> Result<SignatureRequest, String> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        pubkey: Option<String>,
        #[serde(default)]
        proxy: Option<String>,
        object_root: String,
        nonce: u64,
    }
    let b: Body = crate::json::parse_body(body)?;
    let key = match route {
        Route::Consensus => KeyRef::Consensus(pubkey("pubkey", b.pubkey.as_deref().ok_or("missing field `pubkey`")?)?),
        Route::ProxyBls => KeyRef::ProxyBls(pubkey("proxy", b.proxy.as_deref().ok_or("missing field `proxy`")?)?),
        Route::ProxyEcdsa => KeyRef::ProxyEcdsa(hex_bytes(
            "proxy",
            b.proxy.as_deref().ok_or("missing field `proxy`")?,
            &[20, 33],
        )?),
    };
    Ok(SignatureRequest {
        key,
        object_root: root(&b.object_root)?,
        dialect: Dialect::Current { nonce: b.nonce },
    })
}

/// `POST /signer/v1/request_signature` (Web3Signer's): `{"type", "pubkey", "object_root"}`.
pub fn parse_legacy(body: &[u8]) -> Result<SignatureRequest, String> {
    #[derive(Deserialize)]
    struct Body {
        r#type: String,
        pubkey: String,
        object_root: String,
    }
    let b: Body = crate::json::parse_body(body)?;
    let key = match b.r#type.to_ascii_lowercase().as_str() {
        "consensus" => KeyRef::Consensus(pubkey("pubkey", &b.pubkey)?),
        "proxy_bls" => KeyRef::ProxyBls(pubkey("pubkey", &b.pubkey)?),
        "proxy_ecdsa" => KeyRef::ProxyEcdsa(hex_bytes("pubkey", &b.pubkey, &[20, 33])?),
        other => {
            return Err(format!(
                "type: `{}` is not one of consensus, proxy_bls, proxy_ecdsa",
                other.escape_default()
            ));
        }
    };
    Ok(SignatureRequest {
        key,
        object_root: root(&b.object_root)?,
        dialect: Dialect::Legacy,
    })
}

/// `POST /signer/v1/generate_proxy_key`: `{"pubkey", "scheme": "bls" | "ecdsa"}`.
pub fn parse_proxy_request(body: &[u8]) -> Result<ProxyRequest, String> {
    #[derive(Deserialize)]
    struct Body {
        pubkey: String,
        scheme: String,
    }
    let b: Body = crate::json::parse_body(body)?;
    let scheme = match b.scheme.to_ascii_lowercase().as_str() {
        "bls" => ProxyScheme::Bls,
        "ecdsa" => ProxyScheme::Ecdsa,
        other => return Err(format!("scheme: `{}` is not bls or ecdsa", other.escape_default())),
    };
    Ok(ProxyRequest {
        delegator: pubkey("pubkey", &b.pubkey)?,
        scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str =
        "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    const ROOT: &str = "0x0123456789012345678901234567890123456789012345678901234567890123";

    #[test]
    fn both_dialects_parse_and_errors_name_the_field() {
        let r = parse_current(
            Route::Consensus,
            format!(r#"{{"pubkey":"{PK}","object_root":"{ROOT}","nonce":7}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(r.dialect, Dialect::Current { nonce: 7 });
        let r = parse_legacy(format!(r#"{{"type":"CONSENSUS","pubkey":"{PK}","object_root":"{ROOT}"}}"#).as_bytes())
            .unwrap();
        assert_eq!(r.dialect, Dialect::Legacy);
        assert!(matches!(r.key, KeyRef::Consensus(_)));
        let e = parse_current(
            Route::ProxyEcdsa,
            format!(r#"{{"proxy":"0x12","object_root":"{ROOT}","nonce":1}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.starts_with("proxy: expected [20, 33] bytes"), "{e}");
        let e = parse_current(
            Route::Consensus,
            format!(r#"{{"pubkey":"{PK}","object_root":"{ROOT}"}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.contains("nonce"), "{e}");
        let e = parse_legacy(format!(r#"{{"type":"deposit","pubkey":"{PK}","object_root":"{ROOT}"}}"#).as_bytes())
            .unwrap_err();
        assert!(e.starts_with("type: `deposit`"), "{e}");
        let e = parse_proxy_request(format!(r#"{{"pubkey":"{PK}","scheme":"rsa"}}"#).as_bytes()).unwrap_err();
        assert!(e.starts_with("scheme:"), "{e}");
    }
}
