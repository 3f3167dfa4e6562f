//! `sluice auth …`: access keys and identity policies over the native gRPC API.
//!
//! Calls are signed with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (an admin key, or
//! one whose policies allow the `sluice:*Key*`/`sluice:*Policy` actions).

use crate::grpc::{self, status_error};
use anyhow::Context;
use sluice_proto::v1 as pb;
use sluice_proto::v1::auth_client::AuthClient;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Create, list and delete access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Attach, detach and show identity policies of access keys.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Create an access key; its secret is printed once and cannot be shown again.
    Create {
        /// The user the key belongs to (principal arn:aws:iam::<account>:user/<user>).
        #[arg(long)]
        user: String,
        /// Allow the key everything, whatever its policies say.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List access keys (never their secrets).
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Delete an access key.
    Delete {
        access_key_id: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Attach (or replace) a named IAM-style policy document to an access key.
    Attach {
        access_key_id: String,
        /// The policy's name on this key.
        #[arg(long)]
        name: String,
        /// The JSON policy document (`-` reads standard input).
        #[arg(long)]
        document: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Detach a named policy from an access key.
    Detach {
        access_key_id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print a named policy of an access key.
    Get {
        access_key_id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct Common {
    #[command(flatten)]
    node: grpc::Target,
    /// Print JSON instead of text.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

pub fn run(command: AuthCommand) -> anyhow::Result<()> {
    crate::block_on(async move {
        match command {
            AuthCommand::Key(command) => key(command).await,
            AuthCommand::Policy(command) => policy(command).await,
        }
    })
}

async fn client(common: &Common) -> anyhow::Result<AuthClient<grpc::Signed>> {
    let (channel, signer) = common.node.connect().await?;
    Ok(AuthClient::with_interceptor(channel, signer))
}

fn json(common: &Common) -> bool {
    common.output == "json"
}

async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            user,
            admin,
            common,
        } => {
            let key = client(&common)
                .await?
                .create_access_key(pb::CreateAccessKeyRequest { user, admin })
                .await
                .map_err(status_error)?
                .into_inner();
            if json(&common) {
                println!(
                    "{}",
                    serde_json::json!({
                        "AccessKeyId": key.access_key_id,
                        "SecretAccessKey": key.secret_access_key,
                        "UserName": key.user,
                    })
                );
            } else {
                println!("AccessKeyId      {}", key.access_key_id);
                println!("SecretAccessKey  {}", key.secret_access_key);
                println!("UserName         {}", key.user);
                println!("(the secret is not shown again)");
            }
        }
        KeyCommand::List { common } => {
            let keys = client(&common)
                .await?
                .list_access_keys(pb::ListAccessKeysRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .keys;
            if json(&common) {
                let keys: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "AccessKeyId": k.access_key_id,
                            "UserName": k.user,
                            "CreatedMs": k.created_ms,
                            "Admin": k.admin,
                            "Policies": k.policies,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(keys));
            } else {
                println!(
                    "{:<24} {:<20} {:<6} POLICIES",
                    "ACCESS KEY ID", "USER", "ADMIN"
                );
                for k in keys {
                    println!(
                        "{:<24} {:<20} {:<6} {}",
                        k.access_key_id,
                        k.user,
                        if k.admin { "yes" } else { "no" },
                        k.policies.join(",")
                    );
                }
            }
        }
        KeyCommand::Delete {
            access_key_id,
            common,
        } => {
            client(&common)
                .await?
                .delete_access_key(pb::DeleteAccessKeyRequest {
                    access_key_id: access_key_id.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("deleted {access_key_id}");
        }
    }
    Ok(())
}

async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Attach {
            access_key_id,
            name,
            document,
            common,
        } => {
            let text = if document.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("read standard input")?
            } else {
                std::fs::read_to_string(&document)
                    .with_context(|| format!("read {}", document.display()))?
            };
            client(&common)
                .await?
                .attach_policy(pb::AttachPolicyRequest {
                    access_key_id: access_key_id.clone(),
                    policy_name: name.clone(),
                    document: text,
                })
                .await
                .map_err(status_error)?;
            println!("attached {name} to {access_key_id}");
        }
        PolicyCommand::Detach {
            access_key_id,
            name,
            common,
        } => {
            client(&common)
                .await?
                .detach_policy(pb::DetachPolicyRequest {
                    access_key_id: access_key_id.clone(),
                    policy_name: name.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("detached {name} from {access_key_id}");
        }
        PolicyCommand::Get {
            access_key_id,
            name,
            common,
        } => {
            let document = client(&common)
                .await?
                .get_policy(pb::GetPolicyRequest {
                    access_key_id,
                    policy_name: name,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .document;
            println!("{document}");
        }
    }
    Ok(())
}
