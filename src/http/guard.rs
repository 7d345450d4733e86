//! What keeps web pages away from the signer: a `Host` allow-list (DNS rebinding), CORS off
//! unless origins are named (a page's cross-origin request is refused outright, not only left
//! unreadable), and JSON-only POSTs (a form or `text/plain` POST needs no CORS preflight, so a
//! browser would send it from any page).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

#[derive(Clone, Debug, Default)]
pub struct HttpGuard {
    /// Lower-case host names without port; `None`: any.
    hosts: Option<Vec<String>>,
    /// Exact origins (`https://ops.example:8443`); `None` with `any_origin` false: none.
    origins: Vec<String>,
    any_origin: bool,
}

impl HttpGuard {
    /// `hosts` empty: the defaults (loopback names and the listen address).
    pub fn new(hosts: &[String], listen_host: &str, origins: &[String]) -> HttpGuard {
        let hosts: Vec<String> = hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let hosts = if hosts.iter().any(|h| h == "*") {
            None
        } else if hosts.is_empty() {
            let mut d: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
            let listen = listen_host.trim_matches(['[', ']']).to_ascii_lowercase();
            if !d.contains(&listen) {
                d.push(listen);
            }
            Some(d)
        } else {
            Some(
                hosts
                    .into_iter()
                    .map(|h| h.trim_matches(['[', ']']).to_string())
                    .collect(),
            )
        };
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        HttpGuard {
            any_origin: origins.iter().any(|o| o == "*"),
            origins,
            hosts,
        }
    }

    /// Allowed hosts, for the startup log (`None`: any).
    pub fn hosts(&self) -> Option<&[String]> {
        self.hosts.as_deref()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let Some(allowed) = &self.hosts else { return true };
        let name = host_name(host);
        allowed.iter().any(|a| a == &name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }

    fn check(&self, method: &Method, path: &str, headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
        // HTTP/2 carries the host in :authority, HTTP/1.1 in Host (the middleware refuses an
        // HTTP/1.1 request with neither); an absolute-form target (`GET http://x/...`) names
        // its host in the request line too. Every host named must be a valid one, and allowed.
        let host = match headers.get(header::HOST) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::BadRequest("the Host header is not a valid host name".into()))?,
            ),
        };
        for h in [host, authority].into_iter().flatten() {
            if !valid_host(h) {
                return Err(ApiError::BadRequest(format!(
                    "`{}` is not a valid host name",
                    super::shown(h)
                )));
            }
            if !self.host_allowed(h) {
                return Err(ApiError::Forbidden(format!(
                    "host `{}` is not allowed: add it to --http-host-allowlist",
                    super::shown(&host_name(h))
                )));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("?");
            if !self.origin_allowed(origin) {
                return Err(ApiError::Forbidden(format!(
                    "cross-origin request from `{}` refused: allow it with --http-cors-origins",
                    super::shown(origin)
                )));
            }
        }
        // A body must be JSON (a browser cannot send that cross-site without asking first).
        // `POST /reload` carries none and Web3Signer's clients send it bare; it needs the
        // admin token, which a browser cannot add either.
        if method == Method::POST && !is_json(headers) && path != "/reload" {
            return Err(ApiError::UnsupportedMediaType(
                "POST bodies must be sent with `Content-Type: application/json`".into(),
            ));
        }
        Ok(())
    }
}

/// A `Host` value as RFC 3986 allows one here: a name (letters, digits, `-`, `.`), an IPv4
/// address, or an IPv6 address in brackets, then an optional `:port`. Nothing else (no
/// `user@`, no spaces, nothing beyond ASCII), so the name checked is the name meant.
fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() || !(after.is_empty() || after.starts_with(':')) {
                    return false;
                }
                ("", after.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let name_ok = host.starts_with('[')
        || (!name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// The host name of a `Host` value: port and IPv6 brackets removed, lower case.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

pub async fn middleware(State(guard): State<std::sync::Arc<HttpGuard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let origin = req.headers().get(header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS
        && let Some(o) = &origin
    {
        // A CORS preflight: answered here, for allowed origins only.
        return match guard.check(
            &Method::GET,
            &path,
            req.headers(),
            req.uri().authority().map(|a| a.as_str()),
        ) {
            Ok(()) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, DELETE"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, x-request-id"),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                h.insert(header::VARY, HeaderValue::from_static("origin"));
                r
            }
            Err(e) => e.for_path(&path),
        };
    }
    if req.version() == axum::http::Version::HTTP_11
        && !req.headers().contains_key(header::HOST)
        && req.uri().authority().is_none()
    {
        return ApiError::BadRequest("an HTTP/1.1 request must carry a Host header".into()).for_path(&path);
    }
    if let Err(e) = guard.check(
        req.method(),
        &path,
        req.headers(),
        req.uri().authority().map(|a| a.as_str()),
    ) {
        static REFUSED: crate::ratelimit::RateLimit = crate::ratelimit::RateLimit::new();
        if let Some(held) = REFUSED.allow() {
            tracing::warn!(path = %super::shown(&path), reason = %e.message(), similar_since_last = held, "request refused");
        }
        return e.for_path(&path);
    }
    let mut response = next.run(req).await;
    if let Some(o) = origin {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn default_hosts_are_loopback_and_the_listen_address() {
        let g = HttpGuard::new(&[], "10.0.0.5", &[]);
        for ok in [
            "localhost:9000",
            "127.0.0.1:9000",
            "[::1]:9000",
            "10.0.0.5:9000",
            "LOCALHOST",
            "localhost.",
        ] {
            assert!(
                g.check(&Method::GET, "/api/v1/eth2/sign/x", &headers(&[("host", ok)]), None)
                    .is_ok(),
                "{ok}"
            );
        }
        let e = g
            .check(
                &Method::GET,
                "/api/v1/eth2/sign/x",
                &headers(&[("host", "rebind.attacker.example:9000")]),
                None,
            )
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.message().contains("rebind.attacker.example") && e.message().contains("--http-host-allowlist"));
        assert!(
            HttpGuard::new(&["*".into()], "127.0.0.1", &[])
                .check(&Method::GET, "/api/v1/eth2/sign/x", &headers(&[("host", "x.y")]), None)
                .is_ok()
        );
        let named = HttpGuard::new(&["signer.internal".into()], "0.0.0.0", &[]);
        assert!(
            named
                .check(
                    &Method::GET,
                    "/api/v1/eth2/sign/x",
                    &headers(&[("host", "signer.internal:9000")]),
                    None
                )
                .is_ok()
        );
        assert!(
            named
                .check(
                    &Method::GET,
                    "/api/v1/eth2/sign/x",
                    &headers(&[("host", "localhost:9000")]),
                    None
                )
                .is_err()
        );
    }

    #[test]
    fn host_values_must_be_host_names() {
        for ok in [
            "localhost",
            "localhost:9000",
            "127.0.0.1:9000",
            "[::1]:9000",
            "[::1]",
            "signer.internal",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "localhost:9000@evil.com",
            "user@localhost",
            "local host",
            "localhöst",
            "localhost:",
            "localhost:90000x",
            "[::1",
            "[::1]x",
            "[not-v6]:1",
            "",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        let g = HttpGuard::new(&[], "127.0.0.1", &[]);
        let e = g
            .check(
                &Method::GET,
                "/upcheck",
                &headers(&[("host", "localhost:9000@evil.com")]),
                None,
            )
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        // An absolute-form target for another host, whatever the Host header says.
        let e = g
            .check(
                &Method::GET,
                "/upcheck",
                &headers(&[("host", "localhost")]),
                Some("evil.example"),
            )
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn origins_refused_unless_named_and_posts_must_be_json() {
        let g = HttpGuard::new(&[], "127.0.0.1", &[]);
        let h = headers(&[
            ("host", "localhost"),
            ("origin", "http://evil.example"),
            ("content-type", "application/json"),
        ]);
        assert_eq!(
            g.check(&Method::POST, "/api/v1/eth2/sign/x", &h, None)
                .unwrap_err()
                .status(),
            StatusCode::FORBIDDEN
        );
        let ops = HttpGuard::new(&[], "127.0.0.1", &["https://ops.example/".into()]);
        let h = headers(&[
            ("host", "localhost"),
            ("origin", "https://ops.example"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        assert!(ops.check(&Method::POST, "/api/v1/eth2/sign/x", &h, None).is_ok());
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data"),
        ] {
            let mut h = headers(&[("host", "localhost")]);
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            assert_eq!(
                g.check(&Method::POST, "/api/v1/eth2/sign/x", &h, None)
                    .unwrap_err()
                    .status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{ct:?}"
            );
            assert!(g.check(&Method::GET, "/api/v1/eth2/sign/x", &h, None).is_ok());
            // `POST /reload` carries no body.
            assert!(g.check(&Method::POST, "/reload", &h, None).is_ok(), "{ct:?}");
        }
    }
}
