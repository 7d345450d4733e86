//! A scripted HTTP(S) server on loopback for the secret stores that cannot run here (Vault,
//! Azure Key Vault): each route answers with an exchange from the store's documentation
//! (`tests/data/secret-stores`), and every request is recorded so a test can check what
//! Palisade sent (headers, form fields).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One scripted answer: to `method` on `path` (the query is ignored).
#[derive(Clone, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub body: String,
}

impl Route {
    /// The same answer with a header more (a redirect's `location`).
    pub fn with_header(self, name: &str, value: &str) -> RouteWithHeaders {
        RouteWithHeaders {
            route: self,
            headers: vec![(name.to_string(), value.to_string())],
        }
    }
}

/// A route whose answer carries extra headers.
#[derive(Clone, Debug)]
pub struct RouteWithHeaders {
    pub route: Route,
    pub headers: Vec<(String, String)>,
}

impl From<Route> for RouteWithHeaders {
    fn from(route: Route) -> Self {
        RouteWithHeaders { route, headers: vec![] }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct MockStore {
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`
    pub base: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A self-signed server certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
pub fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl MockStore {
    /// Serves `routes` (over TLS with `tls` = (certificate PEM, key PEM)); unknown routes get
    /// 404 with an empty body.
    pub async fn start<R: Into<RouteWithHeaders>>(routes: Vec<R>, tls: Option<(String, String)>) -> MockStore {
        let routes: Vec<RouteWithHeaders> = routes.into_iter().map(Into::into).collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let acceptor = tls.map(|(cert, key)| {
            use rustls_pki_types::pem::PemObject;
            let certs = vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let base = if acceptor.is_some() {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let (routes, seen) = (Arc::new(routes), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (routes, seen, acceptor) = (routes.clone(), seen.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (routes, seen) = (routes.clone(), seen.clone());
                        async move {
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Recorded {
                                method: method.clone(),
                                uri,
                                headers,
                                body: String::from_utf8_lossy(&body).into(),
                            });
                            let route = routes.iter().find(|r| r.route.method == method && r.route.path == path);
                            let (status, body) =
                                route.map_or((404, String::new()), |r| (r.route.status, r.route.body.clone()));
                            let mut answer = Response::builder()
                                .status(status)
                                .header("content-type", "application/json; charset=utf-8");
                            for (k, v) in route.map(|r| r.headers.as_slice()).unwrap_or_default() {
                                answer = answer.header(k.as_str(), v.as_str());
                            }
                            Ok::<_, Infallible>(answer.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        MockStore { base, requests, task }
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A documented exchange from `tests/data/secret-stores`.
pub fn documented(path: &str) -> String {
    std::fs::read_to_string(super::data_dir().join("secret-stores").join(path)).unwrap()
}

/// The documented Vault KV v2 answer with `fields` in place of the example's `data.data`.
pub fn vault_answer(fields: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&documented("vault/read-secret-version.json")).unwrap();
    v["data"]["data"] = fields;
    v.to_string()
}

/// The documented Key Vault get-secret answer with `value` in place of the example's.
pub fn azure_secret_answer(value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&documented("azure/get-secret.json")).unwrap();
    v["value"] = value.into();
    v.to_string()
}
