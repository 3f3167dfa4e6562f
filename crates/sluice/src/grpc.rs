//! The CLI's gRPC connection: one channel to a node (TLS for `https://` endpoints, trusting
//! the system roots and the PEM bundle in `--ca-bundle` / `SLUICE_CA_BUNDLE`), every call
//! signed with the access key in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when they are
//! set (nodes running with authentication require it; open nodes ignore it).

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use sluice_client::Signer;

pub type Signed = InterceptedService<Channel, Signer>;

/// Where the CLI's gRPC calls go.
#[derive(clap::Args)]
pub struct Target {
    /// gRPC endpoint of any node (https:// for a node with TLS).
    #[arg(
        long,
        env = "SLUICE_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// PEM CA bundle to trust for an https:// endpoint (besides the system roots).
    #[arg(long, env = "SLUICE_CA_BUNDLE")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl Target {
    pub async fn connect(&self) -> anyhow::Result<(Channel, Signer)> {
        connect(&self.endpoint, self.ca_bundle.as_deref()).await
    }

    /// A `sluice-client` connection to the node.
    pub async fn client(&self) -> anyhow::Result<sluice_client::Client> {
        let config = sluice_client::ClientConfig {
            endpoint: self.endpoint.clone(),
            ca_bundle: self.ca_bundle.clone(),
            signer: Signer::from_env(),
        };
        Ok(sluice_client::Client::connect(config).await?)
    }
}

/// Connects to a node's gRPC endpoint.
async fn connect(
    endpoint: &str,
    ca_bundle: Option<&std::path::Path>,
) -> anyhow::Result<(Channel, Signer)> {
    let mut builder = Channel::from_shared(endpoint.to_owned())
        .with_context(|| format!("invalid endpoint {endpoint}"))?;
    if endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = ca_bundle {
            let pem = std::fs::read(path)
                .with_context(|| format!("read CA bundle {}", path.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls).context("configure TLS")?;
    }
    let channel = builder
        .connect()
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    Ok((channel, Signer::from_env()))
}

/// One line naming the Kinesis error type and the server's message.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let kind = status
        .metadata()
        .get("x-sluice-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("error")
        .to_owned();
    anyhow::anyhow!("{kind}: {}", status.message())
}
