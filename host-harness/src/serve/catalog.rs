//! The connectors a gateway serves (`--connectors`): a directory of connector files, or one
//! JSON file holding Kibana's `xpack.actions.preconfigured` map.

use crate::connector_file::ConnectorFile;
use crate::executor::{Executor, Prepared};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One served connector, validated once at load.
#[derive(Clone)]
pub(crate) struct Served {
    /// The connector, secrets resolved.
    pub(crate) file: ConnectorFile,
    /// What every execution of it takes.
    pub(crate) prepared: Prepared,
    /// Kibana's get-connector shape (`validate`'s output), never the secrets.
    pub(crate) public_json: Value,
}

/// The served connectors by id.
pub(crate) struct Catalog {
    connectors: BTreeMap<String, Served>,
}

/// One entry of Kibana's `xpack.actions.preconfigured` map.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Preconfigured {
    name: String,
    action_type_id: String,
    config: Option<Box<RawValue>>,
    secrets: Option<Box<RawValue>>,
}

impl Catalog {
    /// Loads `path` and validates every connector once through the component; the first
    /// invalid connector stops the start with `validate`'s lines.
    pub(crate) async fn load(path: &Path, executor: &Executor) -> Result<Catalog> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot read --connectors", path.display()))?;
        let (files, preconfigured) = if meta.is_dir() {
            (load_directory(path)?, false)
        } else {
            (load_preconfigured(path)?, true)
        };
        let mut connectors = BTreeMap::new();
        for (source, file) in files {
            let prepared = match executor.prepare(&file).await? {
                Ok(prepared) => prepared,
                Err(lines) => bail!(
                    "connector \"{}\" ({source}) is invalid:\n{}",
                    file.id,
                    lines.join("\n")
                ),
            };
            let mut public_json: Value = serde_json::from_str(prepared.connector_json())
                .context("the component's get-connector JSON is not JSON")?;
            if preconfigured {
                public_json["is_preconfigured"] = Value::Bool(true);
            }
            let served = Served {
                file,
                prepared,
                public_json,
            };
            if let Some(previous) = connectors.insert(served.file.id.clone(), served) {
                bail!(
                    "{source}: connector id \"{}\" is used twice",
                    previous.file.id
                );
            }
        }
        if connectors.is_empty() {
            bail!("{}: no connectors to serve", path.display());
        }
        Ok(Catalog { connectors })
    }

    /// The connector with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&Served> {
        self.connectors.get(id)
    }

    /// All connectors, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Served> {
        self.connectors.values()
    }

    /// The ids.
    pub(crate) fn ids(&self) -> std::collections::BTreeSet<String> {
        self.connectors.keys().cloned().collect()
    }
}

/// Every `*.json` file of `dir`, in name order, with the file as its source.
fn load_directory(dir: &Path) -> Result<Vec<(String, ConnectorFile)>> {
    let mut paths = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        bail!(
            "{}: no connector files (*.json) in this directory",
            dir.display()
        );
    }
    paths
        .into_iter()
        .map(|p| Ok((p.display().to_string(), ConnectorFile::load(&p)?)))
        .collect()
}

/// Kibana's `xpack.actions.preconfigured` map: `{"<id>": {"name", "actionTypeId", "config", "secrets"}}`.
fn load_preconfigured(path: &Path) -> Result<Vec<(String, ConnectorFile)>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{file}: cannot read the connectors file"))?;
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{file}: expected Kibana's xpack.actions.preconfigured map ({{\"<id>\": {{...}}}}): invalid at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (id, raw) in map {
        let entry: Preconfigured =
            serde_json::from_str(raw.get()).map_err(|e| anyhow::anyhow!("{file}: [{id}]: {e}"))?;
        if entry.action_type_id != ".gen-ai" {
            bail!(
                "{file}: [{id}.actionTypeId]: expected \".gen-ai\" but got \"{}\"",
                entry.action_type_id
            );
        }
        // Rebuilt as a connector file so that config keeps its exact text and secrets get the
        // same {"env"} / {"file"} resolution.
        let mut text = Map::new();
        text.insert("id".into(), Value::String(id.clone()));
        text.insert("name".into(), Value::String(entry.name));
        let head = Value::Object(text).to_string();
        let mut connector = head[..head.len() - 1].to_owned();
        if let Some(config) = &entry.config {
            connector.push_str(&format!(",\"config\":{}", config.get()));
        }
        if let Some(secrets) = &entry.secrets {
            connector.push_str(&format!(",\"secrets\":{}", secrets.get()));
        }
        connector.push('}');
        let parsed = ConnectorFile::parse(&connector, &id, base)
            .map_err(|e| anyhow::anyhow!("{file}: [{id}]: {e}"))?;
        out.push((format!("{file} [{id}]"), parsed));
    }
    Ok(out)
}
