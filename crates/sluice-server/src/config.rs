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
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
}

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
        Ok(Config {
            data_dir: data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            kinesis_addr: addr("kinesis_addr", kinesis_addr)?,
            grpc_addr: addr("grpc_addr", grpc_addr)?,
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
        })
    }
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
}
