//! The zone lookup against a local HTTPS endpoint that serves Node objects as the
//! Kubernetes API server does (bearer token required).

use super::*;
use rustls::pki_types::PrivateKeyDer;

const TOKEN: &str = "service-account-token";

/// An API server on 127.0.0.1 with a self-signed certificate for that IP: `GET
/// /api/v1/nodes/<name>` answers `nodes[name]`, 404 for another name, 401 without the token.
struct FakeApi {
    _dir: tempfile::TempDir,
    discovery: ZoneDiscovery,
}

impl FakeApi {
    async fn start(nodes: Vec<(&'static str, serde_json::Value)>) -> FakeApi {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("generate a certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.crt");
        let token = dir.path().join("token");
        std::fs::write(&ca, certified.cert.pem()).expect("write ca");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("write token");
        let key = PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let nodes = Arc::new(nodes);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let nodes = Arc::clone(&nodes);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let nodes = Arc::clone(&nodes);
                        async move { Ok::<_, std::convert::Infallible>(answer(&nodes, &request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeApi {
            discovery: ZoneDiscovery {
                node: String::new(),
                api: format!("https://127.0.0.1:{}", addr.port()),
                token,
                ca,
            },
            _dir: dir,
        }
    }

    fn lookup(&self, node: &str) -> ZoneDiscovery {
        ZoneDiscovery {
            node: node.to_owned(),
            ..self.discovery.clone()
        }
    }
}

fn answer(
    nodes: &[(&'static str, serde_json::Value)],
    request: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let respond = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("response")
    };
    let authorized = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|value| value == format!("Bearer {TOKEN}").as_str());
    if !authorized {
        return respond(401, r#"{"kind":"Status","code":401}"#.into());
    }
    let path = request.uri().path();
    match nodes
        .iter()
        .find(|(name, _)| path == format!("/api/v1/nodes/{name}"))
    {
        Some((_, node)) => respond(200, node.to_string()),
        None => respond(404, r#"{"kind":"Status","code":404}"#.into()),
    }
}

fn node(name: &str, labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    })
}

#[tokio::test]
async fn the_zone_label_of_the_node_is_read_over_https_with_the_token() {
    let api = FakeApi::start(vec![
        (
            "worker-a",
            node(
                "worker-a",
                serde_json::json!({
                    "kubernetes.io/hostname": "worker-a",
                    "topology.kubernetes.io/zone": "eu-west-1a",
                }),
            ),
        ),
        (
            "worker-old",
            node(
                "worker-old",
                serde_json::json!({"failure-domain.beta.kubernetes.io/zone": "eu-west-1b"}),
            ),
        ),
        ("worker-none", node("worker-none", serde_json::json!({}))),
    ])
    .await;
    assert_eq!(
        node_zone(&api.lookup("worker-a")).await.unwrap().as_deref(),
        Some("eu-west-1a")
    );
    assert_eq!(
        node_zone(&api.lookup("worker-old"))
            .await
            .unwrap()
            .as_deref(),
        Some("eu-west-1b")
    );
    assert_eq!(node_zone(&api.lookup("worker-none")).await.unwrap(), None);
    assert!(matches!(
        node_zone(&api.lookup("worker-gone")).await,
        Err(ZoneLookupError::Status { status: 404, .. })
    ));

    // The node starts with the zone it read; a configured zone wins over the lookup.
    let mut cluster = ClusterConfig {
        node_id: None,
        advertise_grpc_addr: String::new(),
        advertise_kinesis_addr: String::new(),
        join: Vec::new(),
        replication_factor: 3,
        dead_node_grace: Duration::from_secs(300),
        zone: None,
        zone_discovery: Some(api.lookup("worker-a")),
    };
    assert_eq!(resolve(&cluster).await.as_deref(), Some("eu-west-1a"));
    cluster.zone = Some("configured".into());
    assert_eq!(resolve(&cluster).await.as_deref(), Some("configured"));
}

#[tokio::test]
async fn a_wrong_token_or_an_untrusted_server_leaves_the_node_without_a_zone() {
    let api = FakeApi::start(vec![(
        "worker-a",
        node(
            "worker-a",
            serde_json::json!({"topology.kubernetes.io/zone": "eu-west-1a"}),
        ),
    )])
    .await;
    let mut wrong_token = api.lookup("worker-a");
    let dir = tempfile::tempdir().expect("temp dir");
    wrong_token.token = dir.path().join("token");
    std::fs::write(&wrong_token.token, "another-token").expect("write token");
    assert!(matches!(
        node_zone(&wrong_token).await,
        Err(ZoneLookupError::Status { status: 401, .. })
    ));

    let mut untrusted = api.lookup("worker-a");
    untrusted.ca = dir.path().join("other-ca.crt");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("generate a certificate");
    std::fs::write(&untrusted.ca, other.cert.pem()).expect("write ca");
    assert!(matches!(
        node_zone(&untrusted).await,
        Err(ZoneLookupError::Connect(_))
    ));
    let cluster = ClusterConfig {
        node_id: None,
        advertise_grpc_addr: String::new(),
        advertise_kinesis_addr: String::new(),
        join: Vec::new(),
        replication_factor: 3,
        dead_node_grace: Duration::from_secs(300),
        zone: None,
        zone_discovery: Some(untrusted),
    };
    assert_eq!(resolve(&cluster).await, None);
}
