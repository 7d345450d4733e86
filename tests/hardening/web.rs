//! A web page (CORS, DNS rebinding, forms), hostile Host values and forwarding headers a
//! client adds itself.

use std::net::TcpStream;

use testkit::http::{MINIMAL_GVR, attestation, client, randao, sign_url};
use testkit::server::Palisade;

use super::{addr, exchange, send};

#[tokio::test]
async fn a_web_page_cannot_make_it_sign() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    let pk = &testkit::interop_pubkeys()[0];
    let url = sign_url(&p, pk);
    let body = attestation(1, 2, 0xaa, MINIMAL_GVR).to_string();

    // A form-like POST (no preflight in a browser), a foreign Origin, a rebinding Host.
    type Attack<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let attacks: [Attack; 3] = [
        (&[("content-type", "text/plain")], 415, "application/json"),
        (
            &[("content-type", "application/json"), ("origin", "http://evil.example")],
            403,
            "--http-cors-origins",
        ),
        (
            &[
                ("content-type", "application/json"),
                ("host", "rebind.attacker.example"),
            ],
            403,
            "--http-host-allowlist",
        ),
    ];
    for (headers, status, reason) in attacks {
        let mut req = client().post(&url).body(body.clone());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let (s, m) = send(req).await;
        assert_eq!(s, status, "{headers:?}: {m}");
        assert!(m.contains(reason), "{headers:?}: {m}");
    }
    // A preflight from a page is refused too.
    let (s, _) = send(
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(s, 403);

    // None of them recorded anything: a different attestation for the same target signs.
    let (s, m) = testkit::http::post(&url, attestation(1, 2, 0xbb, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
}

#[tokio::test]
async fn named_origins_and_hosts_are_let_in() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[
        "--http-cors-origins",
        "https://ops.example",
        "--http-host-allowlist",
        "signer.internal,127.0.0.1",
    ]);
    let url = sign_url(&p, &testkit::interop_pubkeys()[0]);
    let r = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://ops.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://ops.example");
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .header("host", "signer.internal:9000")
        .header("origin", "https://ops.example")
        .body(randao(3, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://ops.example");
    let (s, _) = send(client().get(p.url("/upcheck")).header("host", "localhost")).await;
    assert_eq!(s, 403, "localhost is not in the configured list");
}
/// A raw HTTP/1.1 request for `target` with the given header lines.
fn raw(method: &str, target: &str, headers: &[&[u8]], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        r.extend_from_slice(format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body.as_bytes());
    r
}

#[tokio::test]
async fn host_values_that_name_another_host_are_refused() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    testkit::http::keys_loaded(&p).await;
    let a = addr(&p);
    let pk = &testkit::interop_pubkeys()[0];
    let target = format!("/api/v1/eth2/sign/{pk}");
    let body = attestation(3, 4, 0xaa, MINIMAL_GVR).to_string();
    let port = a.rsplit(':').next().unwrap().to_string();
    let userinfo = format!("Host: localhost:{port}@evil.example");
    let absolute = format!("http://evil.example{target}");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("HTTP/1.1 without Host", raw("POST", &target, &[], &body), 400),
        (
            "non-ASCII Host",
            raw("POST", &target, &[b"Host: localh\xc3\xb6st"], &body),
            400,
        ),
        ("user@host", raw("POST", &target, &[userinfo.as_bytes()], &body), 400),
        (
            "Host with a path",
            raw("POST", &target, &[b"Host: 127.0.0.1/x"], &body),
            400,
        ),
        (
            "absolute-form target for another host",
            raw("POST", &absolute, &[b"Host: 127.0.0.1"], &body),
            403,
        ),
    ];
    for (what, request, status) in cases {
        let mut s = TcpStream::connect(&a).unwrap();
        let (got, _, answer) = exchange(&mut s, &request);
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.contains("host") || answer.contains("Host"), "{what}: {answer}");
    }
    // None of them signed: another attestation for the same target is still the first.
    let (s, m) = testkit::http::post(&sign_url(&p, pk), attestation(3, 4, 0xbb, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
    // An absolute-form target for this host is served.
    let own = format!("http://{a}/upcheck");
    let mut s = TcpStream::connect(&a).unwrap();
    let (got, _, answer) = exchange(&mut s, &raw("GET", &own, &[format!("Host: {a}").as_bytes()], ""));
    assert_eq!(got, 200, "{answer}");
}

/// Behind a trusted proxy, only the header it sets names the client: a `Forwarded` (or any
/// other) header the client adds is ignored, and the audit record holds the proxy's word.
#[tokio::test]
async fn a_client_cannot_choose_the_address_recorded_for_it() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&["--trusted-proxies", "127.0.0.1"]);
    testkit::http::keys_loaded(&p).await;
    let token = p.token();
    // As HAProxy's `option forwardfor` sends it, with the client's own additions.
    let r = client()
        .get(p.url("/eth/v1/keystores"))
        .bearer_auth(&token)
        .header("x-forwarded-for", "10.9.8.7")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "5.5.5.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = p.wait_for_log("admin request (token accepted)").await;
    let line = log
        .lines()
        .find(|l| l.contains("admin request (token accepted)"))
        .unwrap();
    assert!(line.contains("10.9.8.7"), "{line}");
    assert!(!line.contains("6.6.6.6") && !line.contains("5.5.5.5"), "{line}");

    // With `--trusted-proxy-header forwarded`, the other way round.
    let (_keys2, q) = testkit::http::signer_with_interop_keys(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--trusted-proxy-header",
        "forwarded",
    ]);
    let r = client()
        .get(q.url("/eth/v1/keystores"))
        .bearer_auth(q.token())
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=10.9.8.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = q.wait_for_log("admin request (token accepted)").await;
    let line = log
        .lines()
        .find(|l| l.contains("admin request (token accepted)"))
        .unwrap();
    assert!(line.contains("10.9.8.7") && !line.contains("6.6.6.6"), "{line}");
    // A value that is not an option is refused at startup, naming the choices.
    let refused = Palisade::try_serve_in(
        tempfile::tempdir().unwrap().path(),
        &["--trusted-proxy-header", "x-client-ip"],
    )
    .err()
    .expect("an unknown forwarding header must be refused");
    assert!(
        refused.contains("x-forwarded-for, forwarded, x-real-ip or none"),
        "{refused}"
    );
}
