//! Connector files (cli.md "Connector file"): Kibana's create-connector body, with secret
//! values optionally read from `{"env": "VAR"}` or `{"file": "path"}`.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a connector file cannot be used (exit code 2). Never contains a secret value.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    /// The connector file.
    pub file: String,
    /// What is wrong, naming the field or the JSON position.
    pub message: String,
}

/// A loaded connector: the component receives `config` verbatim and `secrets` resolved.
#[derive(Clone)]
pub struct ConnectorFile {
    /// `id`, or the file stem.
    pub id: String,
    /// `name`.
    pub name: String,
    /// The `config` object's exact JSON text (numbers keep their spelling).
    pub config_json: String,
    /// The `secrets` object with references resolved, as JSON text.
    pub secrets_json: String,
}

impl fmt::Debug for ConnectorFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorFile")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("config_json", &self.config_json)
            .field("secrets_json", &"[REDACTED]")
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    id: Option<String>,
    name: String,
    connector_type_id: Option<String>,
    config: Option<Box<RawValue>>,
    secrets: Option<Box<RawValue>>,
}

/// The members of a JSON object in input order, repeats included, each value as its raw
/// text. Raw values are read without serde_json's nesting limit, so that a value nested too
/// deep reaches the component, which names its field (C50); `config` is read the same way.
struct RawMembers(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawMembers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawMembers, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A secret read from elsewhere: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    env: Option<String>,
    file: Option<String>,
}

impl ConnectorFile {
    /// Reads `path`; secret file references are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = path.display().to_string();
        let err = |message: String| LoadError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read the connector file: {e}")))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &stem, &base).map_err(err)
    }

    /// Parses a connector definition; `default_id` is used when it has no `id`.
    pub fn parse(text: &str, default_id: &str, base_dir: &Path) -> Result<Self, String> {
        Self::parse_with_env(text, default_id, base_dir, |var| std::env::var(var).ok())
    }

    /// [`parse`](Self::parse), with `{"env": "VAR"}` references looked up by `env`.
    fn parse_with_env(
        text: &str,
        default_id: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| {
            format!(
                "invalid connector JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        if let Some(type_id) = &raw.connector_type_id
            && type_id != ".gen-ai"
        {
            return Err(format!(
                "[connector_type_id]: expected \".gen-ai\" but got \"{type_id}\""
            ));
        }
        let config_json = raw
            .config
            .map_or_else(|| "{}".to_owned(), |c| c.get().to_owned());
        let secrets_json = match raw.secrets {
            None => "{}".to_owned(),
            Some(secrets) if is_object(&secrets) => {
                let RawMembers(members) = serde_json::from_str(secrets.get())
                    .map_err(|e| format!("invalid connector JSON in secrets: {e}"))?;
                let mut out = String::from("{");
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(key));
                    out.push(':');
                    out.push_str(&resolve_secret(key, value, base_dir, &env)?);
                }
                out.push('}');
                out
            }
            // Left to the component, which reports it in Kibana's words (C18).
            Some(other) => other.get().to_owned(),
        };
        Ok(ConnectorFile {
            id: raw.id.unwrap_or_else(|| default_id.to_owned()),
            name: raw.name,
            config_json,
            secrets_json,
        })
    }
}

/// Whether a raw JSON value is an object (raw values start at their first character).
fn is_object(value: &RawValue) -> bool {
    value.get().starts_with('{')
}

/// The JSON string literal for `text`.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The JSON text of secret `key`: an `{"env"}` or `{"file"}` reference resolved to a string,
/// anything else as written.
fn resolve_secret(
    key: &str,
    value: &RawValue,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !is_object(value) {
        return Ok(value.get().to_owned());
    }
    let field = format!("secrets.{key}");
    let not_a_reference =
        || format!("[{field}]: expected a string, {{\"env\": \"VAR\"}} or {{\"file\": \"path\"}}");
    let reference: Reference = serde_json::from_str(value.get()).map_err(|_| not_a_reference())?;
    match (reference.env, reference.file) {
        (Some(var), None) => env(&var).map(|v| json_string(&v)).ok_or_else(|| {
            format!("[{field}]: environment variable {var} is not set or not UTF-8")
        }),
        (None, Some(file)) => {
            let path: PathBuf = base_dir.join(file);
            let text = read_secret_file(&path).map_err(|e| format!("[{field}]: {e}"))?;
            // Editors end files with a newline; a key never does.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            Ok(json_string(text))
        }
        _ => Err(not_a_reference()),
    }
}

/// The largest secret file read: a key, or PEM certificates and their chain, are a few KiB; a
/// reference to `/dev/zero` or a log file must fail at once, not exhaust memory.
const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;

/// A secret file's text, at most [`MAX_SECRET_FILE_BYTES`]; the error names the file.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} KiB, the most a secret file may hold",
            path.display(),
            MAX_SECRET_FILE_BYTES >> 10
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("cannot read {}: not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_defaults_to_stem_and_config_is_verbatim() {
        let c = ConnectorFile::parse(
            r#"{"name":"n","config":{"temperature":0.70, "apiProvider":"OpenAI"},"secrets":{"apiKey":"sk-1"}}"#,
            "stem",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.id, "stem");
        assert_eq!(
            c.config_json,
            r#"{"temperature":0.70, "apiProvider":"OpenAI"}"#
        );
        assert!(!format!("{c:?}").contains("sk-1"));
    }

    #[test]
    fn env_and_file_references() {
        let dir = std::env::temp_dir().join(format!("oc-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.txt"), "sk-from-file\n").unwrap();
        let env = |var: &str| (var == "OC_TEST_KEY_VAR").then(|| "sk-from-env".to_owned());
        let c = ConnectorFile::parse_with_env(
            r#"{"name":"n","secrets":{"apiKey":{"env":"OC_TEST_KEY_VAR"},"caData":{"file":"key.txt"}}}"#,
            "x",
            &dir,
            env,
        )
        .unwrap();
        assert_eq!(
            c.secrets_json,
            r#"{"apiKey":"sk-from-env","caData":"sk-from-file"}"#
        );
        let e = ConnectorFile::parse_with_env(
            r#"{"name":"n","secrets":{"apiKey":{"env":"OC_NOT_SET_123"}}}"#,
            "x",
            &dir,
            env,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "[secrets.apiKey]: environment variable OC_NOT_SET_123 is not set or not UTF-8"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = ConnectorFile::parse("{\"name\": \"n\",\n \"config\": {,}}", "x", Path::new("."))
            .unwrap_err();
        assert!(
            e.starts_with("invalid connector JSON at line 2 column"),
            "{e}"
        );
        let e = ConnectorFile::parse(
            r#"{"name":"n","connector_type_id":".slack"}"#,
            "x",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "[connector_type_id]: expected \".gen-ai\" but got \".slack\""
        );
        let e = ConnectorFile::parse(r#"{"name":"n","extra":1}"#, "x", Path::new(".")).unwrap_err();
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = ConnectorFile::parse(r#"{"config":{}}"#, "x", Path::new(".")).unwrap_err();
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn c50_secrets_nested_deeper_than_serde_json_allows_reach_the_component() {
        // serde_json stops at 128 levels of the whole file; C50 counts from `secrets`, and
        // the component names the field, so the host passes deep values on as written.
        let deep = "[".repeat(300) + &"]".repeat(300);
        let c = ConnectorFile::parse(
            &format!(r#"{{"name":"n","secrets":{{"apiKey": "k\u0031","x":{deep}}}}}"#),
            "x",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            c.secrets_json,
            format!(r#"{{"apiKey":"k\u0031","x":{deep}}}"#)
        );
        // A deep object is not a reference, and is refused as one, naming the field.
        let deep = "{\"a\":".repeat(300) + "1" + &"}".repeat(300);
        let e = ConnectorFile::parse(
            &format!(r#"{{"name":"n","secrets":{{"apiKey":{deep}}}}}"#),
            "x",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"[secrets.apiKey]: expected a string, {"env": "VAR"} or {"file": "path"}"#
        );
        // Secrets that are not an object are the component's to report (C18).
        let c = ConnectorFile::parse(r#"{"name":"n","secrets":[1]}"#, "x", Path::new(".")).unwrap();
        assert_eq!(c.secrets_json, "[1]");
    }

    #[test]
    fn a_secret_file_is_read_within_a_bound() {
        let e = ConnectorFile::parse(
            r#"{"name":"n","secrets":{"caData":{"file":"/dev/zero"}}}"#,
            "x",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "[secrets.caData]: /dev/zero is larger than 1024 KiB, the most a secret file may hold"
        );
        let e = ConnectorFile::parse(
            r#"{"name":"n","secrets":{"apiKey":{"file":"no-such-secret-file"}}}"#,
            "x",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.starts_with("[secrets.apiKey]: cannot read ./no-such-secret-file: "),
            "{e}"
        );
    }
}
