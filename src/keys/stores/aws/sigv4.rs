//! AWS Signature Version 4 for the JSON protocol Secrets Manager speaks (POST `/`, no query
//! string). A few dozen lines on the `sha2` and `hmac` the keystores already use, instead of
//! the SDK's ~200 crates and a second TLS crypto provider; checked against AWS's own test
//! suite (`tests/data/aws-sigv4`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::credentials::Credentials;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What is signed: every header that will be sent (`host` and `x-amz-date` included), the
/// method, the path and the body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Where and when: the credential scope's parts and the request's `x-amz-date`
/// (`YYYYMMDDTHHMMSSZ`).
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub amz_date: &'a str,
}

/// The canonical request (for tests and debugging; it holds nothing secret).
pub fn canonical_request(req: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        req.path,
        sha256_hex(req.body)
    );
    (canonical, signed_headers)
}

/// The `Authorization` header value for `req`.
pub fn authorization(req: &Request, creds: &Credentials, scope: &Scope) -> String {
    let (canonical, signed_headers) = canonical_request(req);
    let date = &scope.amz_date[..8];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{credential_scope}\n{}",
        scope.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let secret = Zeroizing::new(format!("AWS4{}", creds.secret_access_key.as_str()));
    let k_date = Zeroizing::new(hmac(secret.as_bytes(), date.as_bytes()));
    let k_region = Zeroizing::new(hmac(k_date.as_ref(), scope.region.as_bytes()));
    let k_service = Zeroizing::new(hmac(k_region.as_ref(), scope.service.as_bytes()));
    let k_signing = Zeroizing::new(hmac(k_service.as_ref(), b"aws4_request"));
    let signature = hex::encode(hmac(k_signing.as_ref(), string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// One case of the suite: the request as sent (headers in file order, body), plus what
    /// the signer adds (date, body hash, session token), as the suite's context says.
    fn check_case(dir: &Path) {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let context: serde_json::Value = serde_json::from_str(&read("context.json")).unwrap();
        let request = read("request.txt");
        let (head, body) = request.split_once("\n\n").unwrap_or((&request, ""));
        let mut lines = head.lines();
        let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let mut headers: Vec<(String, String)> = lines
            .map(|l| l.split_once(':').unwrap())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ts = context["timestamp"].as_str().unwrap().replace(['-', ':'], "");
        headers.push(("X-Amz-Date".into(), ts.clone()));
        if context["sign_body"] == true {
            headers.push(("x-amz-content-sha256".into(), sha256_hex(body.as_bytes())));
        }
        let token = context["credentials"]["token"].as_str();
        if let Some(t) = token {
            headers.push(("X-Amz-Security-Token".into(), t.into()));
        }
        let creds = Credentials {
            access_key_id: context["credentials"]["access_key_id"].as_str().unwrap().into(),
            secret_access_key: Zeroizing::new(context["credentials"]["secret_access_key"].as_str().unwrap().into()),
            session_token: token.map(|t| Zeroizing::new(t.to_string())),
        };
        let req = Request {
            method: first[0],
            path: first[1],
            headers: &headers,
            body: body.as_bytes(),
        };
        let name = dir.display();
        assert_eq!(
            canonical_request(&req).0,
            read("header-canonical-request.txt"),
            "{name}"
        );
        let scope = Scope {
            region: context["region"].as_str().unwrap(),
            service: context["service"].as_str().unwrap(),
            amz_date: &ts,
        };
        let expected = read("header-signed-request.txt")
            .lines()
            .find_map(|l| l.strip_prefix("Authorization:").map(str::to_string))
            .unwrap();
        assert_eq!(authorization(&req, &creds, &scope), expected, "{name}");
    }

    #[test]
    fn the_aws_test_suite() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws-sigv4");
        let mut n = 0;
        for e in std::fs::read_dir(&root).unwrap() {
            let dir = e.unwrap().path();
            if dir.is_dir() {
                check_case(&dir);
                n += 1;
            }
        }
        assert_eq!(n, 8, "every copied case ran");
    }
}
