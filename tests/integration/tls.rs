//! TLS on both listeners: the AWS SDK for Rust over HTTPS, HTTP/1.1 and HTTP/2 chosen by
//! ALPN, plain HTTP refused, gRPC over TLS with and without client certificates, and a
//! certificate swapped on disk reaching new handshakes without a restart; and a cluster
//! whose nodes call each other over (mutual) TLS, which a node with a certificate from
//! another CA cannot join.

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
use sluice_proto::v1::node_client::NodeClient;
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
        self.leaf_for(names, vec![usage])
    }

    /// A node's certificate: it serves both listeners and is the client certificate of
    /// its calls to peers, for the names peers dial (here the loopback IP).
    fn node(&self) -> Leaf {
        self.leaf_for(
            &["localhost", "127.0.0.1"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn leaf_for(&self, names: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = usages;
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

/// A TLS node of a cluster: its certificate from `issuer`, mutual TLS on gRPC with
/// `trusted` as the client CA, peers verified against `trusted` too (given as
/// `tls_peer_ca` when `explicit_peer_ca`, else the default: the client CA).
async fn start_cluster_node(
    files: &CertFiles,
    trusted: &TestCa,
    explicit_peer_ca: bool,
    join: Option<&Node>,
    zone: Option<&str>,
) -> Node {
    std::fs::write(&files.client_ca, &trusted.cert_pem).expect("write ca");
    Node::start_with(NodeOptions {
        config: sluice_server::RawConfig {
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(files.key.clone()),
            tls_client_ca: Some(files.client_ca.clone()),
            tls_peer_ca: explicit_peer_ca.then(|| files.client_ca.clone()),
            join: join.map(|seed| vec![seed.grpc_addr.to_string()]),
            zone: zone.map(str::to_owned),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// GetClusterStatus over mutual TLS, with a client certificate of `ca`.
async fn cluster_status(node: &Node, ca: &TestCa) -> Result<pb::GetClusterStatusResponse, String> {
    let client = ca.client();
    let channel = grpc_channel(node, ca, Some(&client))
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    NodeClient::new(channel)
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("call: {status:?}"))
}

/// Waits until `node` sees exactly `members` nodes and a metadata leader.
async fn wait_members(node: &Node, ca: &TestCa, members: usize) {
    wait_for(
        &format!("{members} members seen by {}", node.grpc_addr),
        Duration::from_secs(60),
        || async {
            cluster_status(node, ca)
                .await
                .is_ok_and(|status| status.nodes.len() == members && status.metadata_leader != 0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_forms_and_replicates_through_every_node() {
    let ca = TestCa::new("sluice cluster ca");
    let files: Vec<CertFiles> = (0..3).map(|_| CertFiles::new(&ca.node())).collect();
    let first = start_cluster_node(&files[0], &ca, false, None, Some("zone-a")).await;
    wait_members(&first, &ca, 1).await;
    let second = start_cluster_node(&files[1], &ca, true, Some(&first), Some("zone-b")).await;
    let third = start_cluster_node(&files[2], &ca, false, Some(&first), None).await;
    let nodes = [&first, &second, &third];
    for node in nodes {
        wait_members(node, &ca, 3).await;
    }

    let clients: Vec<aws_sdk_kinesis::Client> = nodes
        .iter()
        .map(|node| https_sdk_client(&https_endpoint(node), &ca))
        .collect();
    create_active(&clients[1], "replicated", 2).await;
    // Every shard has three replicas, so its group replicates between all three nodes.
    let status = cluster_status(&third, &ca).await.expect("cluster status");
    // Each node's zone, as it announced it (none for the third).
    let mut zones: Vec<String> = status.nodes.iter().map(|n| n.zone.clone()).collect();
    zones.sort();
    assert_eq!(zones, ["", "zone-a", "zone-b"], "{status:?}");
    let placed: Vec<_> = status
        .shards
        .iter()
        .filter(|shard| shard.stream_name == "replicated")
        .collect();
    assert_eq!(placed.len(), 2, "{status:?}");
    for shard in &placed {
        let mut replicas = shard.replicas.clone();
        replicas.sort_unstable();
        replicas.dedup();
        assert_eq!(replicas.len(), 3, "{shard:?}");
    }

    // A put through each node (forwarded to the shard's leader over TLS) ...
    let mut written = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let key = format!("key-{index}");
        let data = format!("through node {index}");
        let (shard, sequence) = put(client, "replicated", &key, data.as_bytes()).await;
        written.push((shard, sequence, data));
    }
    // ... reads back through every node, each replica having applied it.
    for client in &clients {
        for (shard, sequence, data) in &written {
            let shard = shard.clone();
            let sequence = sequence.clone();
            wait_for(
                &format!("record {sequence} readable"),
                Duration::from_secs(20),
                || {
                    let shard = shard.clone();
                    let sequence = sequence.clone();
                    async move {
                        read_all(client, "replicated", &shard)
                            .await
                            .iter()
                            .any(|record| {
                                record.sequence_number() == sequence
                                    && record.data().as_ref() == data.as_bytes()
                            })
                    }
                },
            )
            .await;
        }
    }
    third.stop().await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let ca = TestCa::new("sluice cluster ca");
    let rogue_ca = TestCa::new("another ca");
    let files = CertFiles::new(&ca.node());
    let first = start_cluster_node(&files, &ca, false, None, None).await;
    wait_members(&first, &ca, 1).await;

    // The intruder trusts the cluster's CA, but its own certificate was signed by another:
    // the member refuses its client certificate, so the join call never gets through.
    let rogue_files = CertFiles::new(&rogue_ca.node());
    let rogue = start_cluster_node(&rogue_files, &ca, true, Some(&first), None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let status = cluster_status(&first, &ca).await.expect("cluster status");
        assert_eq!(status.nodes.len(), 1, "{status:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nor does it know of a cluster (it answers with a certificate of its own CA).
    let status = cluster_status(&rogue, &rogue_ca).await;
    assert!(
        status.is_err()
            || status
                .as_ref()
                .is_ok_and(|status| status.metadata_leader == 0),
        "{status:?}"
    );
    drop(rogue);
    first.stop().await;
}
