//! TLS on both listeners: the AWS SDK for Rust over HTTPS, HTTP/1.1 and HTTP/2 chosen by
//! ALPN, plain HTTP refused, gRPC over TLS with and without client certificates, and a
//! certificate swapped on disk reaching new handshakes without a restart.

use crate::{create_active, put, read_all};
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self as smithy_tls, TlsContext, TrustStore};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sluice_proto::v1 as pb;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_tests::{Node, NodeOptions, wait_for};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test certificate authority.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its private key, in PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert_pem = params.self_signed(&key).expect("self-sign the ca").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem,
        }
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Leaf {
        self.leaf(&["node-2.sluice"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("ca der"))
            .expect("add the ca");
        roots
    }
}

/// The certificate files a TLS node reads, in a directory the test owns.
struct CertFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl CertFiles {
    fn new(server: &Leaf) -> CertFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = CertFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("client-ca.pem"),
            _dir: dir,
        };
        std::fs::write(&files.cert, &server.cert_pem).expect("write cert");
        std::fs::write(&files.key, &server.key_pem).expect("write key");
        files
    }

    /// A node with TLS on both listeners; with `client_ca`, gRPC clients need a certificate.
    async fn start_node(&self, client_ca: Option<&TestCa>) -> Node {
        let client_ca = client_ca.map(|ca| {
            std::fs::write(&self.client_ca, &ca.cert_pem).expect("write client ca");
            self.client_ca.clone()
        });
        Node::start_with(NodeOptions {
            config: sluice_server::RawConfig {
                tls_cert: Some(self.cert.clone()),
                tls_key: Some(self.key.clone()),
                tls_client_ca: client_ca,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
    }
}

/// The AWS SDK for Rust over HTTPS, trusting only `ca`, with rustls on ring.
///
/// The smithy client offers ALPN `h2` and `http/1.1` and has no knob to pick one; the node
/// prefers `h2`, so these calls run over HTTP/2 (`alpn_prefers_h2` checks that choice, and
/// the raw requests below cover HTTP/1.1).
fn https_sdk_client(endpoint: &str, ca: &TestCa) -> aws_sdk_kinesis::Client {
    let tls_context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(ca.cert_pem.as_bytes()))
        .build()
        .expect("tls context");
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(smithy_tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "tests",
        ))
        .endpoint_url(endpoint)
        .http_client(http_client)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

fn https_endpoint(node: &Node) -> String {
    format!("https://127.0.0.1:{}", node.kinesis_addr.port())
}

/// A TLS client connection offering `alpn`, verifying the server against `roots`.
async fn tls_connect(
    addr: SocketAddr,
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await
}

fn negotiated_alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn presented_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned())
}

fn list_streams_request(authority: &str) -> hyper::Request<Full<bytes::Bytes>> {
    hyper::Request::post(format!("https://{authority}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(Full::new(bytes::Bytes::from_static(b"{}")))
        .expect("request")
}

/// ListStreams over an established TLS connection, as HTTP/2 or HTTP/1.1; the status and
/// the JSON answer.
async fn list_streams_over(
    stream: TlsStream<TcpStream>,
    http2: bool,
    authority: &str,
) -> (u16, serde_json::Value) {
    let io = TokioIo::new(stream);
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        sender
            .send_request(list_streams_request(authority))
            .await
            .expect("h2 request")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        sender
            .send_request(list_streams_request(authority))
            .await
            .expect("http/1.1 request")
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A gRPC channel over TLS to `node`, trusting `ca`, optionally with a client certificate.
async fn grpc_channel(
    node: &Node,
    ca: &TestCa,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    Channel::from_shared(format!("https://localhost:{}", node.grpc_addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

/// ListStreams through `sluice.v1.Streams`, or why it failed (at connect or at the call:
/// with TLS 1.3 a refused client certificate surfaces on the first request).
async fn grpc_list_streams(
    node: &Node,
    ca: &TestCa,
    client: Option<&Leaf>,
) -> Result<Vec<String>, String> {
    let channel = grpc_channel(node, ca, client)
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    let listed = StreamsClient::new(channel)
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .map_err(|status| format!("call: {status:?}"))?
        .into_inner();
    Ok(listed
        .streams
        .into_iter()
        .map(|stream| stream.stream_name)
        .collect())
}

#[tokio::test]
async fn sdk_round_trip_over_https() {
    let ca = TestCa::new("sluice test ca");
    let files = CertFiles::new(&ca.server());
    let node = files.start_node(None).await;
    let client = https_sdk_client(&https_endpoint(&node), &ca);

    create_active(&client, "secure", 1).await;
    let (shard, sequence) = put(&client, "secure", "key-1", b"over tls").await;
    let records = read_all(&client, "secure", &shard).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].sequence_number(), sequence);
    assert_eq!(records[0].data().as_ref(), b"over tls");
    assert_eq!(records[0].partition_key(), Some("key-1"));

    // Shutdown with TLS on (reloader, handshakes, both listeners) ends cleanly.
    node.stop().await;
}

#[tokio::test]
async fn alpn_selects_http2_or_http11_and_both_serve_the_kinesis_api() {
    let ca = TestCa::new("sluice test ca");
    let files = CertFiles::new(&ca.server());
    let node = files.start_node(None).await;
    let authority = format!("localhost:{}", node.kinesis_addr.port());

    // What the AWS SDKs offer: both, and the node picks HTTP/2.
    let both = tls_connect(node.kinesis_addr, ca.roots(), &[b"h2", b"http/1.1"])
        .await
        .expect("tls handshake");
    assert_eq!(negotiated_alpn(&both).as_deref(), Some(&b"h2"[..]));
    let (status, json) = list_streams_over(both, true, &authority).await;
    assert_eq!(status, 200);
    assert!(json["StreamNames"].is_array(), "{json}");

    let http11 = tls_connect(node.kinesis_addr, ca.roots(), &[b"http/1.1"])
        .await
        .expect("tls handshake");
    assert_eq!(negotiated_alpn(&http11).as_deref(), Some(&b"http/1.1"[..]));
    let (status, json) = list_streams_over(http11, false, &authority).await;
    assert_eq!(status, 200);
    assert!(json["StreamNames"].is_array(), "{json}");

    // A client that sends no ALPN at all (curl --no-alpn, old SDKs) still gets HTTP/1.1.
    let no_alpn = tls_connect(node.kinesis_addr, ca.roots(), &[])
        .await
        .expect("tls handshake");
    assert_eq!(negotiated_alpn(&no_alpn), None);
    let (status, _) = list_streams_over(no_alpn, false, &authority).await;
    assert_eq!(status, 200);

    // The gRPC listener speaks HTTP/2 only.
    let refused = tls_connect(node.grpc_addr, ca.roots(), &[b"http/1.1"]).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| format!("{error:?}").contains("NoApplicationProtocol")),
        "grpc port negotiated http/1.1: {:?}",
        refused.map(|stream| negotiated_alpn(&stream))
    );
}

#[tokio::test]
async fn plain_http_to_a_tls_port_fails() {
    let ca = TestCa::new("sluice test ca");
    let files = CertFiles::new(&ca.server());
    let node = files.start_node(None).await;

    // The SDK pointed at http:// instead of https://.
    let plain = node.client().list_streams().send().await;
    assert!(plain.is_err(), "plain http answered: {plain:?}");

    // Cleartext HTTP/2 with prior knowledge, as the h2c path of a plain node accepts.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::post(format!("http://{}/", node.kinesis_addr))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(Full::new(bytes::Bytes::from_static(b"{}")))
        .expect("request");
    let h2c = client.request(request).await;
    assert!(h2c.is_err(), "h2c answered: {h2c:?}");

    // The node is unharmed: an HTTPS client still gets through.
    let client = https_sdk_client(&https_endpoint(&node), &ca);
    client
        .list_streams()
        .send()
        .await
        .expect("https after plain");
}

#[tokio::test]
async fn grpc_over_tls() {
    let ca = TestCa::new("sluice test ca");
    let files = CertFiles::new(&ca.server());
    let node = files.start_node(None).await;

    let channel = grpc_channel(&node, &ca, None).await.expect("connect");
    let mut streams = StreamsClient::new(channel);
    streams
        .create_stream(pb::CreateStreamRequest {
            stream_name: "grpc-tls".to_owned(),
            shard_count: 1,
            ..Default::default()
        })
        .await
        .expect("create over tls");
    assert_eq!(
        grpc_list_streams(&node, &ca, None).await,
        Ok(vec!["grpc-tls".to_owned()])
    );

    // A client that does not trust the node's CA refuses the node.
    let stranger = TestCa::new("some other ca");
    assert!(grpc_list_streams(&node, &stranger, None).await.is_err());

    drop(streams);
    node.stop().await;
}

#[tokio::test]
async fn mutual_tls_on_grpc_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = TestCa::new("sluice server ca");
    let client_ca = TestCa::new("sluice node ca");
    let files = CertFiles::new(&server_ca.server());
    let node = files.start_node(Some(&client_ca)).await;

    let anonymous = grpc_list_streams(&node, &server_ca, None).await;
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|error| error.contains("CertificateRequired")),
        "no client certificate: {anonymous:?}"
    );

    let foreign = TestCa::new("not the node ca").client();
    let refused = grpc_list_streams(&node, &server_ca, Some(&foreign)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.contains("UnknownCA")),
        "certificate of another ca: {refused:?}"
    );

    let member = client_ca.client();
    assert_eq!(
        grpc_list_streams(&node, &server_ca, Some(&member)).await,
        Ok(Vec::new())
    );

    // The Kinesis listener does not ask AWS clients for certificates.
    let sdk = https_sdk_client(&https_endpoint(&node), &server_ca);
    sdk.list_streams()
        .send()
        .await
        .expect("kinesis without a client certificate");
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_reaches_new_handshakes() {
    let first_ca = TestCa::new("first ca");
    let second_ca = TestCa::new("second ca");
    let files = CertFiles::new(&first_ca.server());
    let node = files.start_node(None).await;

    let before = tls_connect(node.kinesis_addr, first_ca.roots(), &[b"http/1.1"])
        .await
        .expect("handshake with the first certificate");
    let authority = format!("localhost:{}", node.kinesis_addr.port());

    let renewed = second_ca.server();
    let renewed_der =
        CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).expect("renewed der");
    tokio::fs::write(&files.cert, &renewed.cert_pem)
        .await
        .expect("overwrite cert");
    tokio::fs::write(&files.key, &renewed.key_pem)
        .await
        .expect("overwrite key");

    wait_for(
        "a handshake to present the renewed certificate",
        Duration::from_secs(30),
        || {
            let roots = second_ca.roots();
            let renewed_der = renewed_der.clone();
            async move {
                match tls_connect(node.kinesis_addr, roots, &[b"http/1.1"]).await {
                    Ok(stream) => presented_certificate(&stream) == Some(renewed_der),
                    Err(_) => false,
                }
            }
        },
    )
    .await;

    // New handshakes no longer present the old certificate, on either listener...
    assert!(
        tls_connect(node.kinesis_addr, first_ca.roots(), &[b"http/1.1"])
            .await
            .is_err()
    );
    assert_eq!(
        grpc_list_streams(&node, &second_ca, None).await,
        Ok(Vec::new())
    );
    // ...and a connection made before the swap keeps working.
    let (status, _) = list_streams_over(before, false, &authority).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unusable_tls_files_stop_the_node_before_it_opens_its_data() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let missing_cert = temp.path().join("missing.crt");
    let ca = TestCa::new("sluice test ca");
    let key = temp.path().join("server.key");
    std::fs::write(&key, ca.server().key_pem).expect("write key");
    let config = sluice_server::Config::from_raw(sluice_server::RawConfig {
        data_dir: Some(data_dir.clone()),
        tls_cert: Some(missing_cert.clone()),
        tls_key: Some(key),
        ..Default::default()
    })
    .expect("valid config");
    let listeners = sluice_server::Listeners {
        kinesis: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        admin: None,
    };

    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        sluice_server::serve(config, listeners, std::future::pending()),
    )
    .await
    .expect("serve returns instead of serving");
    let error = stopped.expect_err("a missing certificate file is refused");
    assert!(
        matches!(
            &error,
            sluice_server::ServerError::Tls(sluice_server::TlsError::Read { path, .. })
                if *path == missing_cert
        ),
        "{error:?}"
    );
    let source = std::error::Error::source(&error).expect("a cause");
    assert_eq!(
        source.to_string(),
        format!("read {}", missing_cert.display())
    );
    assert!(!data_dir.exists(), "the data directory was created");
}
