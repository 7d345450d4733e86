//! Who sent a request: the real client behind trusted proxies (PROXY protocol v2, `Forwarded`,
//! `X-Forwarded-For`), the TLS client certificate, and the request id that ties every log line
//! of a request together.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The one forwarding header a trusted proxy's word is read from (`--trusted-proxy-header`):
/// the proxy sets that one; any other a client adds is its own word and is ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardingHeader {
    #[default]
    XForwardedFor,
    Forwarded,
    XRealIp,
    /// Only the PROXY protocol names the client.
    None,
}

impl std::str::FromStr for ForwardingHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardingHeader::XForwardedFor),
            "forwarded" => Ok(ForwardingHeader::Forwarded),
            "x-real-ip" => Ok(ForwardingHeader::XRealIp),
            "none" => Ok(ForwardingHeader::None),
            other => Err(format!("`{other}`: x-forwarded-for, forwarded, x-real-ip or none")),
        }
    }
}

/// Proxies whose word about the client is taken (`--trusted-proxies`), and the header that
/// word is in.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    pub nets: Vec<IpNet>,
    pub header: ForwardingHeader,
}

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("--trusted-proxies: `{s}` is not an address or CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(|nets| TrustedProxies {
                nets,
                header: ForwardingHeader::default(),
            })
    }

    pub fn with_header(self, header: ForwardingHeader) -> Self {
        TrustedProxies { header, ..self }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client a trusted proxy reports in the configured header: the right-most address
    /// that is not itself a trusted proxy (the left part is the client's own word). Other
    /// forwarding headers are ignored: a client could add them.
    pub fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut hops: Vec<IpAddr> = Vec::new();
        let values = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
        };
        match self.header {
            ForwardingHeader::Forwarded => {
                for v in values("forwarded") {
                    for element in v.split(',') {
                        for pair in element.split(';') {
                            if let Some((k, val)) = pair.trim().split_once('=')
                                && k.trim().eq_ignore_ascii_case("for")
                                && let Some(ip) = forwarded_node(val.trim())
                            {
                                hops.push(ip);
                            }
                        }
                    }
                }
            }
            ForwardingHeader::XForwardedFor => {
                for v in values("x-forwarded-for") {
                    hops.extend(v.split(',').filter_map(|h| forwarded_node(h.trim())));
                }
            }
            ForwardingHeader::XRealIp => {
                // One value, set by the proxy: the last one if a client sent its own first.
                hops.extend(values("x-real-ip").last().and_then(|v| forwarded_node(v.trim())));
            }
            ForwardingHeader::None => {}
        }
        hops.into_iter().rev().find(|ip| !self.trusts(*ip))
    }
}

/// `192.0.2.1`, `"[2001:db8::1]:4711"`, `192.0.2.1:80`.
fn forwarded_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

/// A TLS client certificate, named without ambiguity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

/// Who sent a request: recorded with every block and attestation signed for it and written
/// into every log line of the request.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// The TCP peer (a proxy, when there is one).
    pub peer: Option<SocketAddr>,
    /// The client a trusted proxy reported (PROXY protocol, or forwarding headers).
    pub forwarded: Option<SocketAddr>,
    pub certificate: Option<Certificate>,
}

impl fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (self.forwarded, self.peer) {
            (Some(c), Some(p)) => write!(f, "{c} via {p}")?,
            (Some(c), None) => write!(f, "{c}")?,
            (None, Some(p)) => write!(f, "{p}")?,
            (None, None) => f.write_str("unknown")?,
        }
        if let Some(c) = &self.certificate {
            write!(
                f,
                " cert {:?} issuer {:?} sha256:{}",
                c.subject, c.issuer, c.fingerprint
            )?;
        }
        Ok(())
    }
}

/// The id of one request: the client's `X-Request-Id` when it is a sane token, else made up.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn of(headers: &HeaderMap) -> Self {
        let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
        match given {
            Some(v) => RequestId(v.to_string()),
            None => {
                let mut b = [0u8; 8];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
                RequestId(hex::encode(b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_trusted_proxies_are_believed_from_the_right() {
        let t = TrustedProxies::parse(&["10.0.0.0/8, 127.0.0.1".into()]).unwrap();
        assert!(t.trusts("10.1.2.3".parse().unwrap()) && t.trusts("::ffff:127.0.0.1".parse().unwrap()));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 192.0.2.7, 10.0.0.5"),
        );
        // The client may put anything on the left; the right-most untrusted hop is the client.
        assert_eq!(t.forwarded_client(&h), Some("192.0.2.7".parse().unwrap()));
        // HAProxy sets X-Forwarded-For; a `Forwarded` the client added is ignored.
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.9"),
        );
        assert_eq!(t.forwarded_client(&h), Some("192.0.2.7".parse().unwrap()));
        let t = t.with_header(ForwardingHeader::Forwarded);
        assert_eq!(t.forwarded_client(&h), Some("2001:db8::1".parse().unwrap()));
        let t = t.with_header(ForwardingHeader::None);
        assert_eq!(t.forwarded_client(&h), None);
        assert!(TrustedProxies::parse(&["nonsense".into()]).is_err());
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::of(&h).0, "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has spaces\tand tabs"));
        assert_eq!(RequestId::of(&h).0.len(), 16);
    }
}
