//! `cascade keys`: create, list and revoke the project's API keys.

use crate::project::Project;
use anyhow::Result;
use cascade_server::Scope;
use cascade_server::keys::KeyStore;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token once (only a digest is stored). The first key turns
    /// authentication on: every route then needs `Authorization: Bearer <token>`, except health
    /// and metrics while server.open_health / server.open_metrics are true. A running server
    /// takes the change within a second.
    Create {
        /// A name for the key (who or what uses it); shown in logs and the audit trail.
        #[arg(long)]
        name: String,
        /// What the key may do: ingest (events, items, users), serve (recommendations, rank,
        /// similar, features), read (catalogue reads), admin (everything). Repeat or separate
        /// with commas.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// Print the key as JSON (the token included).
        #[arg(long)]
        json: bool,
    },
    /// List the keys: name, id, scopes, created, revoked (never the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name or id; a running server refuses it within a second. Revoking every
    /// key does not turn authentication off.
    Revoke {
        /// The key's name or id.
        key: String,
    },
}

pub fn run(project: &Project, cmd: &KeysCommand) -> Result<()> {
    let keys = KeyStore::new(project.data_dir());
    let now = cascade_core::Timestamp::now().to_string();
    match cmd {
        KeysCommand::Create { name, scopes, json } => {
            let (token, record) = keys.create(name, scopes, &now)?;
            let after = serde_json::json!({"id": record.id, "scopes": record.scopes});
            audit(project, "key.create", &record.name, serde_json::Value::Null, after)?;
            if *json {
                let mut out = serde_json::to_value(&record)?;
                out["token"] = token.into();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
                eprintln!("created key `{}` (id {}, scopes {})", record.name, record.id, scopes.join(", "));
                eprintln!("the token is shown once; store it now:");
                println!("{token}");
            }
        }
        KeysCommand::List { json } => {
            let list = keys.list()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no keys: authentication is off (the server listens on loopback only unless --insecure)");
            } else {
                println!("{:<24} {:<12} {:<24} {:<22} revoked", "name", "id", "scopes", "created");
                for k in &list {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let revoked = k.revoked_at.as_deref().unwrap_or("-");
                    println!("{:<24} {:<12} {:<24} {:<22} {revoked}", k.name, k.id, scopes.join(","), k.created_at);
                }
            }
        }
        KeysCommand::Revoke { key } => {
            let record = keys.revoke(key, &now)?;
            audit(
                project,
                "key.revoke",
                &record.name,
                serde_json::json!({"id": record.id}),
                serde_json::json!({"revoked_at": record.revoked_at}),
            )?;
            println!("revoked key `{}` (id {})", record.name, record.id);
        }
    }
    Ok(())
}

fn audit(
    project: &Project,
    action: &str,
    name: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Result<()> {
    let record =
        cascade_store::AuditRecord::new(cascade_core::Timestamp::now(), project.who(), action, format!("key:{name}"))
            .change(before, after);
    project.audit().append(&record)?;
    Ok(())
}
