//! Spin's runtime config file (`--runtime-config-file`), the part that says
//! where key-value stores live, so one file configures `spin up` and
//! `hongbao-host up` alike:
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//!
//! [key_value_store.users]
//! type = "spin"                # the host's own store (SQLite in the state dir)
//! path = ".spin/sqlite_key_value.db"
//! ```
//!
//! Other tables (variables providers, SQLite databases, …) are Spin's
//! business and are ignored. Relative paths are taken from the file's
//! directory, as Spin does.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One label's store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvStoreConfig {
    /// The host's own store; `path`: its SQLite file.
    Spin { path: Option<PathBuf> },
    /// A Redis server, `redis://host:port[/db]`.
    Redis { url: String },
}

/// The key-value stores a runtime config defines, by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub key_value_stores: BTreeMap<String, KvStoreConfig>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    key_value_store: BTreeMap<String, toml::Value>,
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<RuntimeConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        RuntimeConfig::parse(&text, dir).with_context(|| format!("runtime config {}", path.display()))
    }

    /// Parses a runtime config whose relative paths are relative to `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<RuntimeConfig> {
        let file: File = toml::from_str(text)?;
        let mut key_value_stores = BTreeMap::new();
        for (label, table) in file.key_value_store {
            let kind = table.get("type").and_then(toml::Value::as_str).unwrap_or("").to_owned();
            let store = match kind.as_str() {
                "spin" | "redis" => KvStoreConfig::deserialize(table)
                    .with_context(|| format!("[key_value_store.{label}]: want type, and path or url"))?,
                other => bail!(
                    "[key_value_store.{label}]: type {other:?} is not served here (hongbao-host serves \"spin\" and \"redis\")"
                ),
            };
            let store = match store {
                KvStoreConfig::Spin { path: Some(path) } if path.is_relative() => {
                    KvStoreConfig::Spin { path: Some(dir.join(path)) }
                }
                store => store,
            };
            key_value_stores.insert(label, store);
        }
        Ok(RuntimeConfig { key_value_stores })
    }

    /// The SQLite file of the `spin` labels, if any names one: they must all
    /// agree (the host keeps every local label in one file, as Spin's
    /// default store does).
    pub fn local_path(&self) -> Result<Option<&Path>> {
        let mut paths = self.key_value_stores.values().filter_map(|s| match s {
            KvStoreConfig::Spin { path } => path.as_deref(),
            KvStoreConfig::Redis { .. } => None,
        });
        let first = paths.next();
        if let Some(other) = paths.find(|p| Some(*p) != first) {
            bail!(
                "the runtime config puts spin stores in {} and {}: hongbao-host keeps every local label in one file",
                first.unwrap().display(),
                other.display()
            );
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spin_and_redis_stores_and_ignores_other_tables() {
        let text = r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://127.0.0.1:6379"

            [key_value_store.users]
            type = "spin"
            path = "data/kv.db"

            [variables_vault]
            url = "http://vault"
        "#;
        let config = RuntimeConfig::parse(text, Path::new("/etc/app")).unwrap();
        assert_eq!(config.key_value_stores["default"], KvStoreConfig::Redis { url: "redis://127.0.0.1:6379".into() });
        assert_eq!(config.key_value_stores["users"], KvStoreConfig::Spin { path: Some("/etc/app/data/kv.db".into()) });
        assert_eq!(config.local_path().unwrap(), Some(Path::new("/etc/app/data/kv.db")));
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let cosmos = "[key_value_store.default]\ntype = \"azure_cosmos\"\n";
        assert!(format!("{:#}", RuntimeConfig::parse(cosmos, Path::new(".")).unwrap_err()).contains("azure_cosmos"));
        let no_url = "[key_value_store.default]\ntype = \"redis\"\n";
        assert!(RuntimeConfig::parse(no_url, Path::new(".")).is_err());
        let typo = "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://x\"\nulr = 1\n";
        assert!(RuntimeConfig::parse(typo, Path::new(".")).is_err());
        let two_files = "[key_value_store.a]\ntype = \"spin\"\npath = \"a.db\"\n[key_value_store.b]\ntype = \"spin\"\npath = \"b.db\"\n";
        assert!(RuntimeConfig::parse(two_files, Path::new(".")).unwrap().local_path().is_err());
    }
}
