//! The node's id: configured, or kept in `<data_dir>/node-id` from its first start, so it
//! survives restarts (a node that came back with another id would be a stranger to its
//! cluster).

use crate::ServerError;
use crate::config::ClusterConfig;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

const FILE: &str = "node-id";

/// The id to run with; stores it on first start.
pub async fn resolve(data_dir: &Path, cluster: &ClusterConfig) -> Result<u64, ServerError> {
    let path = data_dir.join(FILE);
    let stored = match tokio::fs::read_to_string(&path).await {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            ServerError::NodeId(format!("{} does not hold a node id", path.display()))
        })?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(ServerError::Io(error)),
    };
    let id = match (cluster.node_id, stored) {
        (Some(configured), Some(stored)) if configured != stored => {
            return Err(ServerError::NodeId(format!(
                "the data directory belongs to node {stored}, not to the configured node {configured}"
            )));
        }
        (_, Some(stored)) => return Ok(stored),
        (Some(configured), None) => configured,
        // The node that bootstraps a cluster is node 1; a joining node picks an id no
        // other node is likely to hold.
        (None, None) if cluster.join.is_empty() => 1,
        (None, None) => random_id(),
    };
    tokio::fs::create_dir_all(data_dir).await?;
    let temp = data_dir.join(format!("{FILE}.tmp"));
    let text = format!("{id}\n");
    let temp_for_write = temp.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp_for_write)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })
    .await
    .map_err(|e| ServerError::NodeId(e.to_string()))??;
    tokio::fs::rename(&temp, &path).await?;
    Ok(id)
}

fn random_id() -> u64 {
    // The standard library's hasher keys are random per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // Never 0, and clear of the small ids operators choose by hand.
    hasher.finish() | (1 << 32)
}
