//! amqps with certificates generated here (rcgen): lapin over TLS with PLAIN, client
//! certificates verified against the CA, EXTERNAL authentication by the certificate's CN, and
//! refusals when verification fails.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use leveret::broker::access::UserRecord;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA, a server certificate for localhost and a client certificate per CN, as PEM.
struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Self {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    fn issue(&self, cn: &str, names: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

struct TlsBroker {
    broker: TestBroker,
    tls: SocketAddr,
    pki: Pki,
    _dir: tempfile::TempDir,
}

async fn start(verify: bool, fail_if_no_peer_cert: bool) -> TlsBroker {
    let pki = Pki::new("leveret test CA");
    let server = pki.issue("localhost", &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let mut options = BTreeMap::new();
    options.insert("certfile".to_owned(), write("server.pem", &server.cert_pem));
    options.insert("keyfile".to_owned(), write("server.key", &server.key_pem));
    options.insert("cacertfile".to_owned(), write("ca.pem", &pki.ca_pem));
    if verify {
        options.insert("verify".to_owned(), "verify_peer".to_owned());
    }
    options.insert(
        "fail_if_no_peer_cert".to_owned(),
        fail_if_no_peer_cert.to_string(),
    );
    let broker = TestBroker::start().await;
    let config = leveret::server::tls::server_config(&options).expect("TLS settings");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    let (tls, _task) = leveret::server::tls::start(
        "127.0.0.1:0".parse().unwrap(),
        config,
        broker.broker.clone(),
        rx,
    )
    .await
    .unwrap();
    TlsBroker {
        broker,
        tls,
        pki,
        _dir: dir,
    }
}

fn tls_config(pki: &Pki, client: Option<&Issued>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: client.map(|c| OwnedIdentity::PKCS8 {
            pem: c.cert_pem.clone().into_bytes(),
            key: c.key_pem.clone().into_bytes(),
        }),
        cert_chain: Some(pki.ca_pem.clone()),
    }
}

async fn connect(uri: &str, config: OwnedTLSConfig) -> Result<Connection, lapin::Error> {
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_with_config(uri, ConnectionProperties::default(), config, runtime).await
}

#[tokio::test]
async fn lapin_publishes_and_consumes_over_tls_with_plain_login() {
    let b = start(false, false).await;
    let uri = format!("amqps://guest:guest@localhost:{}/%2f", b.tls.port());
    let conn = connect(&uri, tls_config(&b.pki, None))
        .await
        .expect("amqps");
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "over-tls").await;
    ch.confirm_select(Default::default()).await.unwrap();
    let body = vec![7u8; 300_000];
    assert!(publish_confirmed(&ch, "", "over-tls", &body, Default::default()).await);
    let got = get(&ch, "over-tls").await.expect("message");
    assert_eq!(got.delivery.data, body, "a large body crosses TLS intact");
    let connections = b.broker.broker.connections().all();
    assert!(connections[0]
        .tls
        .load(std::sync::atomic::Ordering::Relaxed));
}

#[tokio::test]
async fn external_authenticates_by_the_client_certificate_cn() {
    let b = start(true, true).await;
    let access = b.broker.broker.access();
    access
        .put_user(UserRecord::new("cert-user", None, vec![]))
        .unwrap();
    b.broker
        .broker
        .set_permissions(leveret::broker::access::PermissionRecord {
            user: "cert-user".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
        .unwrap();
    let client = b.pki.issue("cert-user", &[]);
    let uri = format!(
        "amqps://localhost:{}/%2f?auth_mechanism=external",
        b.tls.port()
    );
    let conn = connect(&uri, tls_config(&b.pki, Some(&client)))
        .await
        .expect("EXTERNAL login");
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "mine").await;
    let registered = b.broker.broker.connections().all();
    assert_eq!(registered[0].user, "cert-user");
    assert_eq!(registered[0].auth_mechanism, "EXTERNAL");
    // A certificate whose CN is no user is refused.
    let stranger = b.pki.issue("nobody", &[]);
    assert!(connect(&uri, tls_config(&b.pki, Some(&stranger)))
        .await
        .is_err());
}

#[tokio::test]
async fn verification_refuses_missing_and_foreign_certificates() {
    let b = start(true, true).await;
    let uri = format!("amqps://guest:guest@localhost:{}/%2f", b.tls.port());
    // No client certificate with fail_if_no_peer_cert: the TLS handshake fails.
    assert!(connect(&uri, tls_config(&b.pki, None)).await.is_err());
    // A certificate from another CA: refused too.
    let other = Pki::new("someone else");
    let foreign = other.issue("guest", &[]);
    assert!(connect(&uri, tls_config(&b.pki, Some(&foreign)))
        .await
        .is_err());
    // A good certificate with PLAIN credentials works.
    let good = b.pki.issue("guest", &[]);
    connect(&uri, tls_config(&b.pki, Some(&good)))
        .await
        .expect("verified client");
    let _ = Arc::new(());
}

#[tokio::test]
async fn bad_tls_settings_are_reported() {
    let mut options = BTreeMap::new();
    let err = leveret::server::tls::server_config(&options).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ssl_options.certfile is required for TLS listeners"
    );
    options.insert("certfile".to_owned(), "/nonexistent.pem".to_owned());
    options.insert("keyfile".to_owned(), "/nonexistent.key".to_owned());
    let err = leveret::server::tls::server_config(&options).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent.pem: "), "{err}");
}

/// One HTTP/1.1 request over TLS, trusting the test CA; returns the raw response.
async fn https_get(addr: SocketAddr, ca_pem: &str, path: &str, auth: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS to the API");
    use base64::Engine as _;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        base64::engine::general_purpose::STANDARD.encode(auth)
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap_or_default();
    response
}

#[tokio::test]
async fn the_management_api_is_served_over_tls() {
    let b = start(false, false).await;
    let server = b.pki.issue("localhost", &["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("api.pem");
    let key = dir.path().join("api.key");
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    let mut options = BTreeMap::new();
    options.insert("certfile".to_owned(), cert.to_string_lossy().into_owned());
    options.insert("keyfile".to_owned(), key.to_string_lossy().into_owned());
    let config = leveret::server::tls::server_config(&options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(leveret::admin::AdminState {
        broker: b.broker.broker.clone(),
        rates: Default::default(),
        amqp_ports: vec![],
        http_ports: vec![],
        limits: Default::default(),
    });
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    tokio::spawn(leveret::admin::serve_tls(listener, config, state, rx));
    let ok = https_get(addr, &b.pki.ca_pem, "/api/whoami", "guest:guest").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains(r#"{"name":"guest","tags":["administrator"]}"#),
        "{ok}"
    );
    let refused = https_get(addr, &b.pki.ca_pem, "/api/whoami", "guest:wrong").await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}
