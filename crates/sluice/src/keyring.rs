//! `sluice keyring …`: operator commands on the local keyring file that holds the master
//! keys of encryption at rest. They edit the file in place (atomically, mode 0600); a
//! running node picks the change up at its next key operation. Key material is never
//! printed.

use anyhow::Context;
use sluice_storage::keyring::{KeySummary, LocalKeyring};
use std::path::PathBuf;

/// `sluice keyring` arguments.
#[derive(clap::Args)]
pub struct KeyringArgs {
    /// The keyring file (a node's default is <data-dir>/keyring.json).
    #[arg(
        long,
        global = true,
        env = "SLUICE_KEYRING",
        default_value = "./data/keyring.json"
    )]
    keyring: PathBuf,
    #[command(subcommand)]
    command: KeyringCommand,
}

/// `sluice keyring` subcommands. KEY is a key id, key ARN, alias (alias/NAME) or alias
/// ARN.
#[derive(clap::Subcommand)]
pub enum KeyringCommand {
    /// Create a master key with fresh random material and print its id (creates the
    /// keyring, with alias/aws/kinesis, if it does not exist).
    CreateKey {
        /// An alias for the key (alias/NAME); may be repeated.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Give a key another alias.
    AddAlias { key: String, alias: String },
    /// Add a version with fresh material: new segments are encrypted under it, older
    /// versions still decrypt what they encrypted.
    Rotate { key: String },
    /// Stop a key from encrypting anything new (StartStreamEncryption refuses it, writes
    /// to streams that use it fail); data encrypted with it stays readable.
    Disable { key: String },
    /// Enable a disabled key again.
    Enable { key: String },
    /// List the keys: id, state, versions, aliases.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: KeyringArgs) -> anyhow::Result<()> {
    let path = &args.keyring;
    let open = || LocalKeyring::open(path);
    match args.command {
        KeyringCommand::CreateKey {
            aliases,
            description,
        } => {
            let keyring = LocalKeyring::open_or_create(path)?;
            let key = keyring
                .create_key(&aliases, &description)
                .context("create key")?;
            println!("{}", key.key_id);
        }
        KeyringCommand::AddAlias { key, alias } => {
            open()?.add_alias(&key, &alias).context("add alias")?;
            println!("{alias} -> {key}");
        }
        KeyringCommand::Rotate { key } => {
            let version = open()?.rotate(&key).context("rotate key")?;
            println!("{key}: version {version}");
        }
        KeyringCommand::Disable { key } => {
            open()?.set_enabled(&key, false).context("disable key")?;
            println!("{key}: disabled");
        }
        KeyringCommand::Enable { key } => {
            open()?.set_enabled(&key, true).context("enable key")?;
            println!("{key}: enabled");
        }
        KeyringCommand::List { json } => {
            for key in open()?.list() {
                if json {
                    println!("{}", summary_json(&key));
                } else {
                    println!("{}", summary_line(&key));
                }
            }
        }
    }
    Ok(())
}

fn summary_line(key: &KeySummary) -> String {
    let versions: Vec<String> = key.versions.iter().map(u32::to_string).collect();
    format!(
        "{}  {}  versions {}  {}",
        key.key_id,
        if key.enabled { "enabled " } else { "disabled" },
        versions.join(","),
        key.aliases.join(" ")
    )
}

fn summary_json(key: &KeySummary) -> serde_json::Value {
    serde_json::json!({
        "key_id": key.key_id,
        "enabled": key.enabled,
        "versions": key.versions,
        "aliases": key.aliases,
        "description": key.description,
        "created_ms": key.created_ms,
    })
}
