//! The CLI's gRPC connection: one channel to a node (TLS for `https://` endpoints, trusting
//! the system roots and the PEM bundle in `--ca-bundle` / `SLUICE_CA_BUNDLE`), every call
//! signed with the access key in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when they are
//! set (nodes running with authentication require it; open nodes ignore it).

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
    /// A channel to the node (made by `sluice-client`, TLS included) and the signer.
    pub async fn connect(&self) -> anyhow::Result<(Channel, Signer)> {
        let client = self.client().await?;
        Ok((client.seed_channel(), Signer::from_env()))
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

/// The Kinesis error type a node named in its answer.
pub fn error_kind(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get("x-sluice-error-type")
        .and_then(|v| v.to_str().ok())
}

/// One line naming the Kinesis error type and the server's message.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let kind = error_kind(&status).unwrap_or("error");
    anyhow::anyhow!("{kind}: {}", status.message())
}
