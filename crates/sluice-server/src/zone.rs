//! The zone a node announces: `zone` from the configuration, or, with `zone_from_node`,
//! the `topology.kubernetes.io/zone` label of the Kubernetes node the pod runs on, read
//! once at start-up from the API server (the pod's service account token and CA; the
//! chart grants `get` on nodes). The downward API cannot pass node labels to a pod on
//! older clusters, hence the call.
//!
//! A failed lookup never stops the node: it is logged as a warning and the node starts
//! without a zone (placement then treats it as a zone of its own).

use crate::config::{ClusterConfig, ZoneDiscovery};
use crate::tls::error_chain;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The node label that names its zone, and the deprecated one older clusters still set.
const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

/// How long the whole lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the zone could not be read from the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum ZoneLookupError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable ca certificate in {0}")]
    Ca(String),
    #[error("invalid kubernetes api address {0}")]
    Address(String),
    #[error("connect to the kubernetes api")]
    Connect(#[source] std::io::Error),
    #[error("http exchange with the kubernetes api")]
    Http(#[source] hyper::Error),
    #[error("the kubernetes api answered {status} for node {node}")]
    Status { status: u16, node: String },
    #[error("decode the node object")]
    Decode(#[source] serde_json::Error),
    #[error("the lookup took longer than {LOOKUP_TIMEOUT:?}")]
    Timeout,
}

/// The zone this node announces (see the module documentation).
pub async fn resolve(cluster: &ClusterConfig) -> Option<String> {
    if let Some(zone) = &cluster.zone {
        return Some(zone.clone());
    }
    let discovery = cluster.zone_discovery.as_ref()?;
    match tokio::time::timeout(LOOKUP_TIMEOUT, node_zone(discovery)).await {
        Ok(Ok(Some(zone))) => {
            tracing::info!(
                node = discovery.node,
                zone,
                "zone read from the kubernetes node's labels"
            );
            Some(zone)
        }
        Ok(Ok(None)) => {
            tracing::warn!(
                node = discovery.node,
                "the kubernetes node has no topology.kubernetes.io/zone label; starting without a zone"
            );
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(node = discovery.node, error = %error_chain(&error), "cannot read the zone from the kubernetes api; starting without a zone");
            None
        }
        Err(_) => {
            tracing::warn!(node = discovery.node, error = %ZoneLookupError::Timeout, "cannot read the zone from the kubernetes api; starting without a zone");
            None
        }
    }
}

/// Reads the zone label of `discovery.node` from the API server: `None` when it has none.
pub async fn node_zone(discovery: &ZoneDiscovery) -> Result<Option<String>, ZoneLookupError> {
    let read = |path: &std::path::Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| ZoneLookupError::Read {
                    path: path.display().to_string(),
                    source,
                })
        }
    };
    let token = String::from_utf8_lossy(&read(&discovery.token).await?)
        .trim()
        .to_owned();
    let ca = read(&discovery.ca).await?;
    let ca_name = discovery.ca.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&ca) {
        let certificate = certificate.map_err(|_| ZoneLookupError::Ca(ca_name.clone()))?;
        roots
            .add(certificate)
            .map_err(|_| ZoneLookupError::Ca(ca_name.clone()))?;
    }
    if roots.is_empty() {
        return Err(ZoneLookupError::Ca(ca_name));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| ZoneLookupError::Ca(ca_name.clone()))?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let address = ZoneLookupError::Address(discovery.api.clone());
    let uri: hyper::Uri = discovery.api.parse().map_err(|_| address)?;
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16().or(Some(443))) else {
        return Err(ZoneLookupError::Address(discovery.api.clone()));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ZoneLookupError::Address(discovery.api.clone()))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(ZoneLookupError::Connect)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(ZoneLookupError::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(ZoneLookupError::Http)?;
    let connection = tokio::spawn(connection);
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let request = hyper::Request::get(format!("/api/v1/nodes/{}", discovery.node))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|_| ZoneLookupError::Address(discovery.api.clone()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ZoneLookupError::Http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(ZoneLookupError::Http)?
        .to_bytes();
    connection.abort();
    if status != 200 {
        return Err(ZoneLookupError::Status {
            status,
            node: discovery.node.clone(),
        });
    }
    let node: serde_json::Value = serde_json::from_slice(&body).map_err(ZoneLookupError::Decode)?;
    let labels = &node["metadata"]["labels"];
    Ok(ZONE_LABELS
        .iter()
        .find_map(|label| labels[*label].as_str())
        .map(str::trim)
        .filter(|zone| !zone.is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests;
