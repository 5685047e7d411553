//! Aliases: named, movable pointers from a model family to one bundle version (`champion`,
//! `challenger`, any name matching `^[A-Za-z0-9_-]{1,255}$`; `latest` and `v<digits>` are
//! reserved, as in MLflow). Serving resolves an alias, never "the newest bundle".
//!
//! Every move is appended to the alias history (who, when, from, to, why) in the same atomic
//! write as the move itself (`ROOT/aliases.json`, replaced whole under the registry lock), and to
//! the project's audit log when the registry has one. A rollback moves an alias one step back
//! along its own history: after `3 → 5 → 7`, rollbacks give 5, then 3.

use crate::{Error, Registry, Result};
use cascade_core::Timestamp;
use cascade_store::{AuditLog, AuditRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;

const ALIASES: &str = "aliases.json";
const FORMAT: u32 = 1;

/// The family of the project's recommendation bundles (what `cascade train` writes).
pub const RECOMMENDER: &str = "recommender";
/// The alias serving answers with.
pub const CHAMPION: &str = "champion";
/// The alias rollouts send their share of traffic to.
pub const CHALLENGER: &str = "challenger";

/// Why an alias name is refused, if it is.
pub fn alias_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 255 {
        return Some("must be 1 to 255 characters".into());
    }
    if !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        return Some("use ASCII letters, digits, '_' and '-'".into());
    }
    if name.eq_ignore_ascii_case("latest") {
        return Some("`latest` is reserved: it always means the newest bundle".into());
    }
    let mut chars = name.chars();
    if matches!(chars.next(), Some('v' | 'V')) && chars.as_str().chars().all(|c| c.is_ascii_digit()) && name.len() > 1 {
        return Some("`v<digits>` is reserved for version numbers".into());
    }
    None
}

/// Who moves an alias and why (for the history and the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    /// `key:NAME`, `cli:USER` or `cascade:JOB`.
    pub who: String,
    pub why: Option<String>,
    pub at: Timestamp,
}

impl Actor {
    pub fn new(who: impl Into<String>, why: Option<String>) -> Actor {
        Actor { who: who.into(), why, at: Timestamp::now() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveKind {
    Set,
    Rollback,
    Delete,
}

impl MoveKind {
    fn action(self) -> &'static str {
        match self {
            MoveKind::Set => "alias.set",
            MoveKind::Rollback => "alias.rollback",
            MoveKind::Delete => "alias.delete",
        }
    }
}

/// One entry of an alias's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    pub family: String,
    pub alias: String,
    pub kind: MoveKind,
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// RFC 3339.
    pub at: String,
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AliasFile {
    format: u32,
    /// family → alias → version.
    aliases: BTreeMap<String, BTreeMap<String, u64>>,
    history: Vec<AliasMove>,
}

impl AliasFile {
    /// The versions `alias` moved through, each rollback undoing the move before it: the last is
    /// where it points now, the one below is where a rollback takes it.
    fn stack(&self, family: &str, alias: &str) -> Vec<u64> {
        let mut stack: Vec<u64> = Vec::new();
        for m in self.history.iter().filter(|m| m.family == family && m.alias == alias) {
            match (m.kind, m.to) {
                (MoveKind::Set, Some(to)) if stack.last() != Some(&to) => stack.push(to),
                (MoveKind::Rollback, _) => {
                    stack.pop();
                }
                (MoveKind::Delete, _) => stack.clear(),
                _ => {}
            }
        }
        stack
    }

    fn referenced(&self) -> std::collections::BTreeSet<u64> {
        let current = self.aliases.values().flat_map(|a| a.values().copied());
        let history = self.history.iter().flat_map(|m| m.from.into_iter().chain(m.to));
        current.chain(history).collect()
    }
}

impl Registry {
    /// The registry with every alias move also written to `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Registry {
        self.audit = Some(audit);
        self
    }

    /// The registry with every alias move also written to the audit log of `data_dir`.
    pub fn with_audit_in(self, data_dir: &std::path::Path) -> Registry {
        self.with_audit(AuditLog::new(data_dir))
    }

    fn read_aliases(&self) -> Result<AliasFile> {
        let path = self.root.join(ALIASES);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AliasFile { format: FORMAT, ..Default::default() });
            }
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let file: AliasFile =
            serde_json::from_str(&text).map_err(|e| Error::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if file.format != FORMAT {
            return Err(Error::Corrupt {
                path,
                reason: format!("alias format {}, this build reads {FORMAT}", file.format),
            });
        }
        Ok(file)
    }

    /// Runs `change` on the alias file under the registry lock and writes it back whole.
    fn change_aliases<T>(&self, change: impl FnOnce(&mut AliasFile) -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("LOCK");
        let lock = File::create(&lock_path).map_err(crate::io(&lock_path))?;
        lock.lock().map_err(crate::io(&lock_path))?;
        let mut file = self.read_aliases()?;
        let out = change(&mut file)?;
        let path = self.root.join(ALIASES);
        let text = serde_json::to_vec_pretty(&file).expect("aliases serialise");
        cascade_store::files::write_atomic(&path, &text, false).map_err(crate::io(&path))?;
        Ok(out)
    }

    /// Every alias of `family` and the version it points to.
    pub fn aliases(&self, family: &str) -> Result<BTreeMap<String, u64>> {
        Ok(self.read_aliases()?.aliases.remove(family).unwrap_or_default())
    }

    /// Every family that has an alias or a history.
    pub fn families(&self) -> Result<Vec<String>> {
        let file = self.read_aliases()?;
        let mut out: Vec<String> = file.aliases.keys().cloned().collect();
        out.extend(file.history.iter().map(|m| m.family.clone()));
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The version `alias` of `family` points to.
    pub fn alias(&self, family: &str, alias: &str) -> Result<Option<u64>> {
        Ok(self.read_aliases()?.aliases.get(family).and_then(|a| a.get(alias)).copied())
    }

    /// The bundle `alias` of `family` points to.
    pub fn resolve(&self, family: &str, alias: &str) -> Result<crate::Bundle> {
        let version =
            self.alias(family, alias)?.ok_or_else(|| Error::NoAlias { family: family.into(), alias: alias.into() })?;
        self.get(version)
    }

    /// The moves of `family`'s aliases (of one alias when given), oldest first.
    pub fn alias_history(&self, family: &str, alias: Option<&str>) -> Result<Vec<AliasMove>> {
        let file = self.read_aliases()?;
        Ok(file.history.into_iter().filter(|m| m.family == family && alias.is_none_or(|a| m.alias == a)).collect())
    }

    /// Points `alias` of `family` at `version` (which must exist and belong to the family).
    pub fn set_alias(&self, family: &str, alias: &str, version: u64, actor: &Actor) -> Result<AliasMove> {
        if let Some(reason) = alias_problem(alias) {
            return Err(Error::BadAlias { alias: alias.into(), reason });
        }
        let bundle = self.get(version)?;
        if bundle.manifest.draft.family != family {
            return Err(Error::WrongFamily { version, family: bundle.manifest.draft.family, wanted: family.into() });
        }
        self.apply(family, alias, MoveKind::Set, actor, |_, _| Ok(Some(version)))
    }

    /// Moves `alias` of `family` back to the version it held before its current one.
    pub fn rollback_alias(&self, family: &str, alias: &str, actor: &Actor) -> Result<AliasMove> {
        self.apply(family, alias, MoveKind::Rollback, actor, |file, current| {
            let stack = file.stack(family, alias);
            match (current, stack.len()) {
                (None, _) => Err(Error::NoAlias { family: family.into(), alias: alias.into() }),
                (Some(_), n) if n < 2 => Err(Error::NoPrevious { family: family.into(), alias: alias.into() }),
                (Some(_), n) => Ok(Some(stack[n - 2])),
            }
        })
    }

    /// Removes `alias` of `family` (its history stays).
    pub fn delete_alias(&self, family: &str, alias: &str, actor: &Actor) -> Result<AliasMove> {
        self.apply(family, alias, MoveKind::Delete, actor, |_, current| match current {
            None => Err(Error::NoAlias { family: family.into(), alias: alias.into() }),
            Some(_) => Ok(None),
        })
    }

    fn apply(
        &self,
        family: &str,
        alias: &str,
        kind: MoveKind,
        actor: &Actor,
        target: impl FnOnce(&AliasFile, Option<u64>) -> Result<Option<u64>>,
    ) -> Result<AliasMove> {
        let m = self.change_aliases(|file| {
            let current = file.aliases.get(family).and_then(|a| a.get(alias)).copied();
            let to = target(file, current)?;
            match to {
                Some(v) => {
                    file.aliases.entry(family.into()).or_default().insert(alias.into(), v);
                }
                None => {
                    if let Some(a) = file.aliases.get_mut(family) {
                        a.remove(alias);
                    }
                    file.aliases.retain(|_, a| !a.is_empty());
                }
            }
            let m = AliasMove {
                family: family.into(),
                alias: alias.into(),
                kind,
                from: current,
                to,
                at: actor.at.to_string(),
                who: actor.who.clone(),
                why: actor.why.clone(),
            };
            file.history.push(m.clone());
            Ok(m)
        })?;
        if let Some(audit) = &self.audit {
            let mut record =
                AuditRecord::new(actor.at, &actor.who, kind.action(), format!("{family}@{alias}")).change(m.from, m.to);
            record.why = actor.why.clone();
            audit.append(&record).map_err(|e| Error::Audit(e.to_string()))?;
        }
        Ok(m)
    }

    /// Deletes the bundles beyond the newest `keep` that no alias points to and no alias history
    /// names. Returns the versions deleted.
    pub fn prune(&self, keep: usize) -> Result<Vec<u64>> {
        let lock_path = self.root.join("LOCK");
        let lock = File::create(&lock_path).map_err(crate::io(&lock_path))?;
        lock.lock().map_err(crate::io(&lock_path))?;
        let referenced = self.read_aliases()?.referenced();
        let versions = self.versions()?;
        let old = versions.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for &v in &versions[..old] {
            if referenced.contains(&v) {
                continue;
            }
            let dir = self.bundle_dir(v);
            // Renamed out of `bundles/` first, so a reader never sees half a bundle.
            let trash = self.root.join("staging").join(format!("deleted-{v:06}"));
            std::fs::create_dir_all(self.root.join("staging")).map_err(crate::io(&trash))?;
            std::fs::rename(&dir, &trash).map_err(crate::io(&dir))?;
            std::fs::remove_dir_all(&trash).map_err(crate::io(&trash))?;
            deleted.push(v);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_follow_mlflow() {
        for ok in ["champion", "challenger", "blue-green", "a_b", "v", "v1a", "B2"] {
            assert_eq!(alias_problem(ok), None, "{ok}");
        }
        for bad in ["", "latest", "LATEST", "v1", "V23", "a b", "a/b", "a.b", "ñ", &"x".repeat(256)] {
            assert!(alias_problem(bad).is_some(), "{bad:?}");
        }
    }
}
