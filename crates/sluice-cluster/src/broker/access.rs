//! Access keys, identity policies and resource policies, and the authorization decision
//! both front ends ask for once they have authenticated a caller.
//!
//! Keys and policies are metadata commands like any other control change. Secrets are kept
//! because signature checks need them; they are returned once, when a key is created, and
//! never logged.

use super::Broker;
use crate::error::BrokerError;
use sluice_auth::policy::{AccessRequest, Decision, DenySource, Policy, PolicyKind};
use sluice_meta::{AccessKey, Command};
use sluice_types::{parse_consumer_arn, parse_stream_arn};
use std::collections::HashMap;
use std::sync::Arc;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    pub user: String,
    /// `arn:aws:iam::<account>:user/<user>`
    pub principal: String,
    pub admin: bool,
}

/// An access key as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeySummary {
    pub access_key_id: String,
    pub user: String,
    pub created_ms: u64,
    pub admin: bool,
    pub policies: Vec<String>,
}

/// A new key: the only time its secret is answered.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub user: String,
}

impl std::fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("user", &self.user)
            .finish()
    }
}

/// Parsed policy documents by kind and text, so a request evaluates policies without
/// parsing JSON. Documents were validated when stored; one that no longer parses grants
/// nothing. Bounded: past `MAX_CACHED_POLICIES` distinct documents it starts over.
#[derive(Default)]
pub(super) struct PolicyCache {
    identity: parking_lot::RwLock<HashMap<String, Option<Arc<Policy>>>>,
    resource: parking_lot::RwLock<HashMap<String, Option<Arc<Policy>>>>,
}

const MAX_CACHED_POLICIES: usize = 4096;

impl PolicyCache {
    fn parsed(&self, text: &str, kind: PolicyKind) -> Option<Arc<Policy>> {
        let map = match kind {
            PolicyKind::Identity => &self.identity,
            PolicyKind::Resource => &self.resource,
        };
        if let Some(found) = map.read().get(text) {
            return found.clone();
        }
        let policy = Policy::parse(text, kind).ok().map(Arc::new);
        let mut parsed = map.write();
        if parsed.len() >= MAX_CACHED_POLICIES {
            parsed.clear();
        }
        parsed.insert(text.to_owned(), policy.clone());
        policy
    }
}

/// The resource a policy can be attached to.
enum PolicyTarget {
    Stream(String),
    Consumer { stream: String, consumer: String },
}

impl Broker {
    /// The secret of an access key, for signature checks.
    pub fn secret_of(&self, access_key_id: &str) -> Option<String> {
        self.with_state(|state| {
            state
                .keys
                .get(access_key_id)
                .map(|key| key.secret_access_key.clone())
        })
    }

    /// The caller an access key stands for.
    pub fn caller(&self, access_key_id: &str) -> Option<Caller> {
        let account = &self.identity().account;
        self.with_state(|state| {
            state.keys.get(access_key_id).map(|key| Caller {
                access_key_id: key.access_key_id.clone(),
                user: key.user.clone(),
                principal: format!("arn:aws:iam::{account}:user/{}", key.user),
                admin: key.admin,
            })
        })
    }

    /// Decides whether `caller` may perform `action` (e.g. `kinesis:PutRecord`) on
    /// `resource` (an ARN or `*`). Denials carry AWS's AccessDeniedException message.
    pub fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
    ) -> Result<(), BrokerError> {
        if caller.admin {
            return Ok(());
        }
        let account = self.identity().account.clone();
        let cache = &self.inner.policy_cache;
        let (identity, resource_policy) = self.with_state(|state| {
            let identity: Vec<Arc<Policy>> = state
                .keys
                .get(&caller.access_key_id)
                .map(|key| {
                    key.policies
                        .values()
                        .filter_map(|text| cache.parsed(text, PolicyKind::Identity))
                        .collect()
                })
                .unwrap_or_default();
            let resource_document = match policy_target(resource) {
                Some(PolicyTarget::Stream(stream)) => state
                    .streams
                    .get(&stream)
                    .and_then(|s| s.resource_policy.as_deref()),
                Some(PolicyTarget::Consumer { stream, consumer }) => {
                    state.streams.get(&stream).and_then(|s| {
                        s.consumers
                            .iter()
                            .find(|c| c.name == consumer)
                            .and_then(|c| c.resource_policy.as_deref())
                    })
                }
                None => None,
            };
            let resource_policy =
                resource_document.and_then(|text| cache.parsed(text, PolicyKind::Resource));
            (identity, resource_policy)
        });
        let request = AccessRequest {
            principal: &caller.principal,
            account: &account,
            action,
            resource,
        };
        let because = match sluice_auth::policy::evaluate(
            &request,
            identity.iter().map(|p| p.as_ref()),
            resource_policy.as_deref(),
        ) {
            Decision::Allow => return Ok(()),
            Decision::ExplicitDeny(DenySource::Identity) => {
                "with an explicit deny in an identity-based policy".to_owned()
            }
            Decision::ExplicitDeny(DenySource::Resource) => {
                "with an explicit deny in a resource-based policy".to_owned()
            }
            Decision::ImplicitDeny => {
                format!("because no identity-based policy allows the {action} action")
            }
        };
        Err(BrokerError::AccessDenied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {because}",
            caller.principal
        )))
    }

    /// Creates an access key for `user` with a fresh id and secret.
    pub async fn create_access_key(
        &self,
        user: &str,
        admin: bool,
    ) -> Result<NewAccessKey, BrokerError> {
        check_user_name(user)?;
        let (access_key_id, secret_access_key) = sluice_auth::new_access_key();
        self.propose(Command::CreateAccessKey {
            key: AccessKey {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                user: user.to_owned(),
                created_ms: self.now_ms(),
                admin,
                policies: Default::default(),
            },
        })
        .await?;
        tracing::info!(access_key_id = %access_key_id, user, admin, "access key created");
        Ok(NewAccessKey {
            access_key_id,
            secret_access_key,
            user: user.to_owned(),
        })
    }

    /// Makes sure the configured bootstrap admin key exists with this secret (replacing an
    /// older secret of the same id, so rotating the configured secret takes effect).
    pub async fn ensure_admin_key(
        &self,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<(), BrokerError> {
        let existing = self.with_state(|state| state.keys.get(access_key_id).cloned());
        if let Some(key) = &existing {
            if key.secret_access_key == secret_access_key && key.admin {
                return Ok(());
            }
            self.propose(Command::DeleteAccessKey {
                access_key_id: access_key_id.to_owned(),
            })
            .await?;
        }
        self.propose(Command::CreateAccessKey {
            key: AccessKey {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                user: "admin".to_owned(),
                created_ms: self.now_ms(),
                admin: true,
                policies: existing.map(|k| k.policies).unwrap_or_default(),
            },
        })
        .await?;
        tracing::info!(access_key_id, "bootstrap admin key installed");
        Ok(())
    }

    pub async fn delete_access_key(&self, access_key_id: &str) -> Result<(), BrokerError> {
        self.propose(Command::DeleteAccessKey {
            access_key_id: access_key_id.to_owned(),
        })
        .await?;
        tracing::info!(access_key_id, "access key deleted");
        Ok(())
    }

    pub fn list_access_keys(&self) -> Vec<AccessKeySummary> {
        self.with_state(|state| {
            state
                .keys
                .values()
                .map(|key| AccessKeySummary {
                    access_key_id: key.access_key_id.clone(),
                    user: key.user.clone(),
                    created_ms: key.created_ms,
                    admin: key.admin,
                    policies: key.policies.keys().cloned().collect(),
                })
                .collect()
        })
    }

    /// The identity policy `name` attached to a key.
    pub fn key_policy(&self, access_key_id: &str, name: &str) -> Option<String> {
        self.with_state(|state| {
            state
                .keys
                .get(access_key_id)
                .and_then(|key| key.policies.get(name).cloned())
        })
    }

    /// Attaches (or replaces) a named identity policy after validating the document.
    pub async fn attach_policy(
        &self,
        access_key_id: &str,
        name: &str,
        document: &str,
    ) -> Result<(), BrokerError> {
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(BrokerError::InvalidArgument(format!(
                "Policy name {name:?} must be 1 to 128 letters, digits or +=,.@_- characters."
            )));
        }
        Policy::parse(document, PolicyKind::Identity)
            .map_err(|e| BrokerError::InvalidArgument(e.0))?;
        self.propose(Command::SetKeyPolicy {
            access_key_id: access_key_id.to_owned(),
            policy_name: name.to_owned(),
            document: Some(document.to_owned()),
        })
        .await
    }

    pub async fn detach_policy(&self, access_key_id: &str, name: &str) -> Result<(), BrokerError> {
        self.propose(Command::SetKeyPolicy {
            access_key_id: access_key_id.to_owned(),
            policy_name: name.to_owned(),
            document: None,
        })
        .await
    }

    /// PutResourcePolicy: `arn` names a stream or a consumer.
    pub async fn put_resource_policy(&self, arn: &str, document: &str) -> Result<(), BrokerError> {
        Policy::parse(document, PolicyKind::Resource)
            .map_err(|e| BrokerError::InvalidArgument(e.0))?;
        self.set_resource_policy(arn, Some(document.to_owned()))
            .await
    }

    /// DeleteResourcePolicy.
    pub async fn delete_resource_policy(&self, arn: &str) -> Result<(), BrokerError> {
        if self.resource_policy(arn)?.is_none() {
            return Err(BrokerError::NotFound(format!(
                "No resource policy found for resource ARN {arn}."
            )));
        }
        self.set_resource_policy(arn, None).await
    }

    /// GetResourcePolicy: the document, or `None` when the resource has none.
    pub fn resource_policy(&self, arn: &str) -> Result<Option<String>, BrokerError> {
        match self.policy_target_checked(arn)? {
            PolicyTarget::Stream(stream) => Ok(self.stream(&stream)?.resource_policy),
            PolicyTarget::Consumer { stream, consumer } => Ok(self
                .stream(&stream)?
                .consumers
                .into_iter()
                .find(|c| c.name == consumer)
                .and_then(|c| c.resource_policy)),
        }
    }

    async fn set_resource_policy(
        &self,
        arn: &str,
        policy: Option<String>,
    ) -> Result<(), BrokerError> {
        let (name, consumer) = match self.policy_target_checked(arn)? {
            PolicyTarget::Stream(stream) => (stream, None),
            PolicyTarget::Consumer { stream, consumer } => (stream, Some(consumer)),
        };
        self.propose(Command::SetResourcePolicy {
            name,
            consumer,
            policy,
        })
        .await
    }

    /// Resolves a policy ARN to an existing stream or consumer of this account.
    fn policy_target_checked(&self, arn: &str) -> Result<PolicyTarget, BrokerError> {
        let identity = self.identity();
        let account_part = format!(":{}:", identity.account);
        let target = policy_target(arn).filter(|_| arn.contains(&account_part));
        let Some(target) = target else {
            return Err(BrokerError::InvalidArgument(format!(
                "Resource ARN {arn} is not a stream or consumer ARN of account {}.",
                identity.account
            )));
        };
        if let PolicyTarget::Consumer { stream, consumer } = &target {
            let exists = self
                .stream(stream)?
                .consumers
                .iter()
                .any(|c| &c.name == consumer && arn == self.consumer_arn(stream, c));
            if !exists {
                return Err(BrokerError::NotFound(format!(
                    "Consumer {arn} not found for account {}.",
                    identity.account
                )));
            }
        } else if let PolicyTarget::Stream(stream) = &target {
            self.stream(stream)?;
        }
        Ok(target)
    }

    /// The stream a shard iterator reads, when the iterator is well formed.
    pub fn iterator_stream(&self, iterator: &str) -> Option<String> {
        crate::iterator::ShardIterator::decode(iterator).map(|it| it.stream)
    }

    /// A consumer's ARN (its creation time in epoch seconds ends it).
    pub fn consumer_arn(&self, stream: &str, consumer: &sluice_meta::Consumer) -> String {
        sluice_types::consumer_arn(
            &self.stream_arn(stream),
            &consumer.name,
            consumer.created_ms / 1000,
        )
    }
}

fn policy_target(arn: &str) -> Option<PolicyTarget> {
    if let Some(parts) = parse_consumer_arn(arn) {
        return Some(PolicyTarget::Consumer {
            stream: parts.stream.to_string(),
            consumer: parts.consumer,
        });
    }
    parse_stream_arn(arn).map(|name| PolicyTarget::Stream(name.to_string()))
}

fn check_user_name(user: &str) -> Result<(), BrokerError> {
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(BrokerError::InvalidArgument(format!(
            "User name {user:?} must be 1 to 64 letters, digits or +=,.@_- characters."
        )))
    }
}
