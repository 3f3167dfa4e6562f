//! The node's one typed configuration.
//!
//! Loaded in two stages: a [`RawConfig`] of optional fields is merged from defaults, a TOML
//! file, `SLUICE_*` environment variables and flags (later sources win), then validated
//! into a [`Config`] the rest of the code sees.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Every setting, each optional so sources can be layered.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub kinesis_addr: Option<String>,
    pub grpc_addr: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub fsync: Option<bool>,
    pub segment_bytes: Option<u64>,
    pub retention_check_secs: Option<u64>,
    pub shard_limit: Option<u32>,
    pub throughput_limits: Option<bool>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// `none` (accept any signature) or `sigv4`.
    pub auth: Option<String>,
    /// Bootstrap admin key created at first start when authentication is on.
    pub admin_access_key_id: Option<String>,
    pub admin_secret_access_key: Option<String>,
    /// PEM certificate chain and private key: TLS on the Kinesis and gRPC listeners.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, gRPC (node-to-node) clients must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle the certificates of peer nodes must chain to when this node dials them
    /// over TLS (default: `tls_client_ca`).
    pub tls_peer_ca: Option<PathBuf>,
    /// Master keys for encryption at rest (default `<data_dir>/keyring.json`).
    pub keyring: Option<PathBuf>,
    /// Plain-HTTP listener for `/metrics`, `/healthz` and `/readyz` (off unless set).
    pub admin_addr: Option<String>,
    /// This node's id in the cluster (stable; default: the id stored in the data directory,
    /// or 1 for the first start of a node that bootstraps, a random id for one that joins).
    pub node_id: Option<u64>,
    /// The gRPC address peers and native clients dial (default: `grpc_addr`).
    pub advertise_grpc_addr: Option<String>,
    /// The Kinesis address other nodes name for this node (default: `kinesis_addr`).
    pub advertise_kinesis_addr: Option<String>,
    /// gRPC addresses of running members to join (comma-separated in the environment).
    /// Empty: a node without metadata bootstraps a new cluster.
    pub join: Option<Vec<String>>,
    /// Replicas per shard (capped by the node count).
    pub replication_factor: Option<u32>,
    /// Seconds a node may be unreachable before its replicas are re-created elsewhere.
    pub dead_node_grace_secs: Option<u64>,
    /// The failure domain (availability zone) this node runs in; shard replicas are spread
    /// over distinct zones.
    pub zone: Option<String>,
    /// Without `zone`: the name of the Kubernetes node this pod runs on, whose
    /// `topology.kubernetes.io/zone` label becomes the zone (read at start-up through the
    /// API server, with the pod's service account).
    pub zone_from_node: Option<String>,
    /// The Kubernetes API server (`https://host:port`); in a pod, from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    pub kubernetes_api: Option<String>,
}

impl RawConfig {
    /// Fills fields this one leaves empty from `lower`.
    pub fn over(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            data_dir: self.data_dir.or(lower.data_dir),
            kinesis_addr: self.kinesis_addr.or(lower.kinesis_addr),
            grpc_addr: self.grpc_addr.or(lower.grpc_addr),
            region: self.region.or(lower.region),
            account_id: self.account_id.or(lower.account_id),
            fsync: self.fsync.or(lower.fsync),
            segment_bytes: self.segment_bytes.or(lower.segment_bytes),
            retention_check_secs: self.retention_check_secs.or(lower.retention_check_secs),
            shard_limit: self.shard_limit.or(lower.shard_limit),
            throughput_limits: self.throughput_limits.or(lower.throughput_limits),
            log_level: self.log_level.or(lower.log_level),
            log_format: self.log_format.or(lower.log_format),
            auth: self.auth.or(lower.auth),
            admin_access_key_id: self.admin_access_key_id.or(lower.admin_access_key_id),
            admin_secret_access_key: self
                .admin_secret_access_key
                .or(lower.admin_secret_access_key),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
            tls_peer_ca: self.tls_peer_ca.or(lower.tls_peer_ca),
            keyring: self.keyring.or(lower.keyring),
            admin_addr: self.admin_addr.or(lower.admin_addr),
            node_id: self.node_id.or(lower.node_id),
            advertise_grpc_addr: self.advertise_grpc_addr.or(lower.advertise_grpc_addr),
            advertise_kinesis_addr: self.advertise_kinesis_addr.or(lower.advertise_kinesis_addr),
            join: self.join.or(lower.join),
            replication_factor: self.replication_factor.or(lower.replication_factor),
            dead_node_grace_secs: self.dead_node_grace_secs.or(lower.dead_node_grace_secs),
            zone: self.zone.or(lower.zone),
            zone_from_node: self.zone_from_node.or(lower.zone_from_node),
            kubernetes_api: self.kubernetes_api.or(lower.kubernetes_api),
        }
    }

    pub fn defaults() -> RawConfig {
        RawConfig {
            data_dir: Some(PathBuf::from("./data")),
            kinesis_addr: Some("127.0.0.1:4567".into()),
            grpc_addr: Some("127.0.0.1:50051".into()),
            region: Some("us-east-1".into()),
            account_id: Some("000000000000".into()),
            fsync: Some(true),
            segment_bytes: Some(64 << 20),
            retention_check_secs: Some(60),
            shard_limit: Some(sluice_types::limits::DEFAULT_SHARD_LIMIT),
            throughput_limits: Some(true),
            log_level: Some("info".into()),
            log_format: Some("text".into()),
            auth: Some("none".into()),
            ..RawConfig::default()
        }
    }

    pub fn from_toml_file(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads `SLUICE_*` variables from the given map (tests pass their own).
    pub fn from_env(env: &HashMap<String, String>) -> Result<RawConfig, ConfigError> {
        let get = |key: &str| env.get(key).cloned();
        let parse_bool = |key: &'static str| -> Result<Option<bool>, ConfigError> {
            get(key)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(true),
                    "0" | "false" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError::Invalid {
                        key,
                        value: v,
                        reason: "expected true or false".into(),
                    }),
                })
                .transpose()
        };
        fn parse_num<T: std::str::FromStr>(
            key: &'static str,
            value: Option<String>,
        ) -> Result<Option<T>, ConfigError> {
            value
                .map(|v| {
                    v.parse().map_err(|_| ConfigError::Invalid {
                        key,
                        value: v,
                        reason: "expected a number".into(),
                    })
                })
                .transpose()
        }
        Ok(RawConfig {
            data_dir: get("SLUICE_DATA_DIR").map(PathBuf::from),
            kinesis_addr: get("SLUICE_KINESIS_ADDR"),
            grpc_addr: get("SLUICE_GRPC_ADDR"),
            region: get("SLUICE_REGION"),
            account_id: get("SLUICE_ACCOUNT_ID"),
            fsync: parse_bool("SLUICE_FSYNC")?,
            segment_bytes: parse_num("SLUICE_SEGMENT_BYTES", get("SLUICE_SEGMENT_BYTES"))?,
            retention_check_secs: parse_num(
                "SLUICE_RETENTION_CHECK_SECS",
                get("SLUICE_RETENTION_CHECK_SECS"),
            )?,
            shard_limit: parse_num("SLUICE_SHARD_LIMIT", get("SLUICE_SHARD_LIMIT"))?,
            throughput_limits: parse_bool("SLUICE_THROUGHPUT_LIMITS")?,
            log_level: get("SLUICE_LOG_LEVEL"),
            log_format: get("SLUICE_LOG_FORMAT"),
            auth: get("SLUICE_AUTH"),
            admin_access_key_id: get("SLUICE_ADMIN_ACCESS_KEY_ID"),
            admin_secret_access_key: get("SLUICE_ADMIN_SECRET_ACCESS_KEY"),
            tls_cert: get("SLUICE_TLS_CERT").map(PathBuf::from),
            tls_key: get("SLUICE_TLS_KEY").map(PathBuf::from),
            tls_client_ca: get("SLUICE_TLS_CLIENT_CA").map(PathBuf::from),
            tls_peer_ca: get("SLUICE_TLS_PEER_CA").map(PathBuf::from),
            keyring: get("SLUICE_KEYRING").map(PathBuf::from),
            admin_addr: get("SLUICE_ADMIN_ADDR"),
            node_id: parse_num("SLUICE_NODE_ID", get("SLUICE_NODE_ID"))?,
            advertise_grpc_addr: get("SLUICE_ADVERTISE_GRPC_ADDR"),
            advertise_kinesis_addr: get("SLUICE_ADVERTISE_KINESIS_ADDR"),
            join: get("SLUICE_JOIN").map(|v| split_list(&v)),
            replication_factor: parse_num(
                "SLUICE_REPLICATION_FACTOR",
                get("SLUICE_REPLICATION_FACTOR"),
            )?,
            dead_node_grace_secs: parse_num(
                "SLUICE_DEAD_NODE_GRACE_SECS",
                get("SLUICE_DEAD_NODE_GRACE_SECS"),
            )?,
            zone: get("SLUICE_ZONE"),
            zone_from_node: get("SLUICE_ZONE_FROM_NODE"),
            kubernetes_api: get("SLUICE_KUBERNETES_API").or_else(|| {
                let host = get("KUBERNETES_SERVICE_HOST")?;
                let port = get("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
                Some(if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                })
            }),
        })
    }
}

/// A comma-separated list, empty items dropped.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the Kinesis and gRPC endpoints authenticate callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Any signature (or none) is accepted, as local emulators do.
    Open,
    /// AWS Signature Version 4 against the access keys in the metadata state.
    SigV4,
}

/// An access key given in the configuration. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Certificate files for the node's listeners (reloaded when they change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, gRPC clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The CA bundle peers' certificates must chain to when this node dials them (default:
    /// `client_ca`). Without either, node-to-node calls cannot verify a peer and fail.
    pub peer_ca: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub kinesis_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub region: String,
    pub account_id: String,
    pub fsync: bool,
    pub segment_bytes: u64,
    pub retention_check_interval: Duration,
    pub shard_limit: u32,
    /// Enforce AWS's per-shard throughput limits on provisioned streams.
    pub throughput_limits: bool,
    pub log_level: String,
    pub log_format: LogFormat,
    pub auth: AuthMode,
    pub admin_key: Option<AdminKey>,
    pub tls: Option<TlsFiles>,
    pub keyring_path: PathBuf,
    pub admin_addr: Option<SocketAddr>,
    /// Cluster membership of this node.
    pub cluster: ClusterConfig,
}

/// How this node takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The configured id; `None`: the one stored in the data directory, else chosen at
    /// first start.
    pub node_id: Option<u64>,
    /// The gRPC address peers dial (`host:port`; a host name is allowed).
    pub advertise_grpc_addr: String,
    /// The Kinesis address other nodes name for this node.
    pub advertise_kinesis_addr: String,
    /// Members to join through; empty: bootstrap when there is no metadata yet.
    pub join: Vec<String>,
    pub replication_factor: u32,
    /// How long a node may be unreachable before the rebalancer re-creates its replicas on
    /// other nodes.
    pub dead_node_grace: Duration,
    /// The zone this node announces in the membership; `None`: unknown.
    pub zone: Option<String>,
    /// Where to read the zone from when `zone` is not set.
    pub zone_discovery: Option<ZoneDiscovery>,
}

/// Reading the zone from the labels of the Kubernetes node the pod runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneDiscovery {
    /// The Kubernetes node's name (`spec.nodeName` through the downward API).
    pub node: String,
    /// The API server, `https://host:port`.
    pub api: String,
    /// The service account token and the CA bundle of the API server.
    pub token: PathBuf,
    pub ca: PathBuf,
}

/// Where Kubernetes mounts a pod's service account credentials.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Config {
    /// Validates a merged raw configuration (missing fields take the defaults).
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let RawConfig {
            data_dir,
            kinesis_addr,
            grpc_addr,
            region,
            account_id,
            fsync,
            segment_bytes,
            retention_check_secs,
            shard_limit,
            throughput_limits,
            log_level,
            log_format,
            auth,
            admin_access_key_id,
            admin_secret_access_key,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_peer_ca,
            keyring,
            admin_addr,
            node_id,
            advertise_grpc_addr,
            advertise_kinesis_addr,
            join,
            replication_factor,
            dead_node_grace_secs,
            zone,
            zone_from_node,
            kubernetes_api,
        } = raw.over(RawConfig::defaults());
        let addr = |key: &'static str, value: Option<String>| -> Result<SocketAddr, ConfigError> {
            let value = value.unwrap_or_default();
            value.parse().map_err(|_| ConfigError::Invalid {
                key,
                value,
                reason: "expected host:port with an IP address".into(),
            })
        };
        let account_id = account_id.unwrap_or_default();
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::Invalid {
                key: "account_id",
                value: account_id,
                reason: "expected 12 digits".into(),
            });
        }
        let segment_bytes = segment_bytes.unwrap_or(64 << 20);
        if segment_bytes < (4 << 20) {
            return Err(ConfigError::Invalid {
                key: "segment_bytes",
                value: segment_bytes.to_string(),
                reason: "segments must hold at least 4 MiB so a full PutRecords batch fits".into(),
            });
        }
        let log_format = match log_format.as_deref() {
            Some("json") => LogFormat::Json,
            Some("text") | None => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    value: other.to_owned(),
                    reason: "expected text or json".into(),
                });
            }
        };
        let auth = match auth.as_deref() {
            Some("none") | None => AuthMode::Open,
            Some("sigv4") => AuthMode::SigV4,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "auth",
                    value: other.to_owned(),
                    reason: "expected none or sigv4".into(),
                });
            }
        };
        let admin_key = match (admin_access_key_id, admin_secret_access_key) {
            (None, None) => None,
            (Some(access_key_id), Some(secret_access_key)) => {
                if access_key_id.len() < 16
                    || access_key_id.len() > 128
                    || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(ConfigError::Invalid {
                        key: "admin_access_key_id",
                        value: access_key_id,
                        reason: "expected 16 to 128 letters and digits".into(),
                    });
                }
                if secret_access_key.len() < 16 {
                    return Err(ConfigError::Invalid {
                        key: "admin_secret_access_key",
                        value: "<redacted>".into(),
                        reason: "expected at least 16 characters".into(),
                    });
                }
                Some(AdminKey {
                    access_key_id,
                    secret_access_key,
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "admin_access_key_id",
                    value: String::new(),
                    reason: "the admin access key id and secret access key go together".into(),
                });
            }
        };
        let tls = match (tls_cert, tls_key) {
            (None, None) => {
                if let Some(ca) = tls_client_ca {
                    return Err(ConfigError::Invalid {
                        key: "tls_client_ca",
                        value: ca.display().to_string(),
                        reason: "mutual TLS needs tls_cert and tls_key too".into(),
                    });
                }
                if let Some(ca) = tls_peer_ca {
                    return Err(ConfigError::Invalid {
                        key: "tls_peer_ca",
                        value: ca.display().to_string(),
                        reason: "node-to-node TLS needs tls_cert and tls_key too".into(),
                    });
                }
                None
            }
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                peer_ca: tls_peer_ca.or_else(|| tls_client_ca.clone()),
                client_ca: tls_client_ca,
            }),
            (Some(path), None) | (None, Some(path)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    value: path.display().to_string(),
                    reason: "tls_cert and tls_key go together".into(),
                });
            }
        };
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let keyring_path = keyring.unwrap_or_else(|| data_dir.join("keyring.json"));
        let kinesis_addr = addr("kinesis_addr", kinesis_addr)?;
        let grpc_addr = addr("grpc_addr", grpc_addr)?;
        let replication_factor = replication_factor.unwrap_or(3);
        if !(1..=7).contains(&replication_factor) {
            return Err(ConfigError::Invalid {
                key: "replication_factor",
                value: replication_factor.to_string(),
                reason: "expected 1 to 7".into(),
            });
        }
        let advertise_grpc_addr = advertise_grpc_addr.unwrap_or_else(|| grpc_addr.to_string());
        // A node may be told to join through itself (every pod of a StatefulSet names the
        // first one): that entry is dropped, and a node left with none bootstraps.
        let join: Vec<String> = join
            .unwrap_or_default()
            .into_iter()
            .filter(|seed| *seed != advertise_grpc_addr)
            .collect();
        let cluster = ClusterConfig {
            node_id,
            advertise_grpc_addr,
            advertise_kinesis_addr: advertise_kinesis_addr
                .unwrap_or_else(|| kinesis_addr.to_string()),
            join,
            replication_factor,
            dead_node_grace: Duration::from_secs(dead_node_grace_secs.unwrap_or(300).max(1)),
            zone: validate_zone(zone)?,
            zone_discovery: zone_discovery(zone_from_node, kubernetes_api)?,
        };
        Ok(Config {
            data_dir,
            kinesis_addr,
            grpc_addr,
            region: region.unwrap_or_else(|| "us-east-1".into()),
            account_id,
            fsync: fsync.unwrap_or(true),
            segment_bytes,
            retention_check_interval: Duration::from_secs(
                retention_check_secs.unwrap_or(60).max(1),
            ),
            shard_limit: shard_limit.unwrap_or(sluice_types::limits::DEFAULT_SHARD_LIMIT),
            throughput_limits: throughput_limits.unwrap_or(true),
            log_level: log_level.unwrap_or_else(|| "info".into()),
            log_format,
            auth,
            admin_key,
            tls,
            keyring_path,
            admin_addr: match admin_addr {
                Some(value) => Some(addr("admin_addr", Some(value))?),
                None => None,
            },
            cluster,
        })
    }
}

/// A zone name: up to 63 letters, digits, `-`, `_` or `.`; an empty value means none.
fn validate_zone(zone: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(zone) = zone.map(|zone| zone.trim().to_owned()) else {
        return Ok(None);
    };
    if zone.is_empty() {
        return Ok(None);
    }
    if zone.len() > 63
        || !zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ConfigError::Invalid {
            key: "zone",
            value: zone,
            reason: "expected up to 63 letters, digits, '-', '_' or '.'".into(),
        });
    }
    Ok(Some(zone))
}

/// The Kubernetes lookup of the zone, when `zone_from_node` names a node.
fn zone_discovery(
    node: Option<String>,
    api: Option<String>,
) -> Result<Option<ZoneDiscovery>, ConfigError> {
    let Some(node) = node
        .map(|node| node.trim().to_owned())
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    if node.len() > 253
        || !node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    {
        return Err(ConfigError::Invalid {
            key: "zone_from_node",
            value: node,
            reason: "expected a Kubernetes node name".into(),
        });
    }
    let Some(api) = api.filter(|api| api.starts_with("https://")) else {
        return Err(ConfigError::Invalid {
            key: "kubernetes_api",
            value: String::new(),
            reason: "zone_from_node needs the Kubernetes API (https://host:port; in a pod from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT)".into(),
        });
    };
    let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
    Ok(Some(ZoneDiscovery {
        node,
        api,
        token: dir.join("token"),
        ca: dir.join("ca.crt"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win() {
        let file: RawConfig =
            toml::from_str("kinesis_addr = \"127.0.0.1:1000\"\nregion = \"eu-west-1\"").unwrap();
        let env = RawConfig::from_env(&HashMap::from([(
            "SLUICE_KINESIS_ADDR".to_owned(),
            "127.0.0.1:2000".to_owned(),
        )]))
        .unwrap();
        let flags = RawConfig {
            fsync: Some(false),
            ..RawConfig::default()
        };
        let config = Config::from_raw(flags.over(env).over(file)).unwrap();
        assert_eq!(config.kinesis_addr.port(), 2000);
        assert_eq!(config.region, "eu-west-1");
        assert!(!config.fsync);
        assert_eq!(config.grpc_addr.port(), 50051);
    }

    #[test]
    fn a_node_told_to_join_through_itself_bootstraps() {
        let raw = RawConfig {
            advertise_grpc_addr: Some("sluice-0.sluice-headless.kinesis.svc:50051".into()),
            join: Some(vec!["sluice-0.sluice-headless.kinesis.svc:50051".into()]),
            ..RawConfig::default()
        };
        assert!(Config::from_raw(raw).unwrap().cluster.join.is_empty());
        let raw = RawConfig {
            advertise_grpc_addr: Some("sluice-1.sluice-headless.kinesis.svc:50051".into()),
            join: Some(vec!["sluice-0.sluice-headless.kinesis.svc:50051".into()]),
            ..RawConfig::default()
        };
        assert_eq!(Config::from_raw(raw).unwrap().cluster.join.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<RawConfig>("no_such_key = 1").is_err());
        let bad = RawConfig {
            account_id: Some("12".into()),
            ..RawConfig::default()
        };
        assert!(matches!(
            Config::from_raw(bad),
            Err(ConfigError::Invalid {
                key: "account_id",
                ..
            })
        ));
        let env = HashMap::from([("SLUICE_FSYNC".to_owned(), "maybe".to_owned())]);
        assert!(RawConfig::from_env(&env).is_err());
    }

    #[test]
    fn the_peer_ca_defaults_to_the_client_ca() {
        let env = |pairs: &[(&str, &str)]| {
            RawConfig::from_env(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .unwrap()
        };
        let tls = [
            ("SLUICE_TLS_CERT", "node.crt"),
            ("SLUICE_TLS_KEY", "node.key"),
            ("SLUICE_TLS_CLIENT_CA", "clients.pem"),
        ];
        let files = Config::from_raw(env(&tls)).unwrap().tls.unwrap();
        assert_eq!(files.peer_ca, Some(PathBuf::from("clients.pem")));
        let mut with_peer = tls.to_vec();
        with_peer.push(("SLUICE_TLS_PEER_CA", "peers.pem"));
        let files = Config::from_raw(env(&with_peer)).unwrap().tls.unwrap();
        assert_eq!(files.peer_ca, Some(PathBuf::from("peers.pem")));
        assert_eq!(files.client_ca, Some(PathBuf::from("clients.pem")));
        assert!(matches!(
            Config::from_raw(env(&[("SLUICE_TLS_PEER_CA", "peers.pem")])),
            Err(ConfigError::Invalid {
                key: "tls_peer_ca",
                ..
            })
        ));
    }

    #[test]
    fn the_zone_may_come_from_the_kubernetes_node() {
        let env = HashMap::from([
            ("SLUICE_ZONE_FROM_NODE".to_owned(), "worker-1".to_owned()),
            ("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ]);
        let config = Config::from_raw(RawConfig::from_env(&env).unwrap()).unwrap();
        let discovery = config.cluster.zone_discovery.unwrap();
        assert_eq!(discovery.node, "worker-1");
        assert_eq!(discovery.api, "https://10.96.0.1:443");
        assert_eq!(
            discovery.token,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
        );
        let outside = HashMap::from([("SLUICE_ZONE_FROM_NODE".to_owned(), "worker-1".to_owned())]);
        assert!(matches!(
            Config::from_raw(RawConfig::from_env(&outside).unwrap()),
            Err(ConfigError::Invalid {
                key: "kubernetes_api",
                ..
            })
        ));
    }

    #[test]
    fn the_zone_comes_from_any_source_and_empty_means_none() {
        let file: RawConfig = toml::from_str("zone = \"eu-west-1a\"").unwrap();
        let config = Config::from_raw(file).unwrap();
        assert_eq!(config.cluster.zone.as_deref(), Some("eu-west-1a"));
        let env = HashMap::from([("SLUICE_ZONE".to_owned(), String::new())]);
        let config = Config::from_raw(RawConfig::from_env(&env).unwrap()).unwrap();
        assert_eq!(config.cluster.zone, None);
        let bad = RawConfig {
            zone: Some("eu west".into()),
            ..RawConfig::default()
        };
        assert!(matches!(
            Config::from_raw(bad),
            Err(ConfigError::Invalid { key: "zone", .. })
        ));
    }
}
