//! The settings file (`--settings`): Kibana's `xpack.actions.*` keys without the prefix
//! (cli.md "Settings file", contract section 0).

use crate::host_name;
use crate::proxy::{Proxy, ProxyConfig};
use crate::sandbox::{MAX_MEMORY_BYTES, SandboxLimits};
use crate::serve_settings::ServeSettings;
use crate::tls::Verification;
use openai_connector::json::Value as GrammarValue;
use openai_connector::plan::Deployment;
use openai_connector::redaction::Secrets;
use openai_connector::settings::{self as grammar, Owner};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// Why a settings file was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SettingsError {
    /// The settings file, as given.
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// One `customHostSettings` entry (C128).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CustomHostSettings {
    /// Scheme, lower case.
    pub(crate) scheme: String,
    /// Host name, lower case.
    pub(crate) host: String,
    /// Port (443 or 80 when the URL has none).
    pub(crate) port: u16,
    /// `ssl.verificationMode`, when set.
    pub(crate) verification: Option<Verification>,
    /// Certificates from `ssl.certificateAuthoritiesData`, DER.
    pub(crate) ca_der: Vec<Vec<u8>>,
}

/// Deployment-wide settings, validated when loaded: a value of this type holds no setting
/// that cannot be used. `Debug` hides proxy credentials and proxy header values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `allowedHosts` (default `["*"]`).
    /// The keys the component applies (`allowedHosts`, `responseTimeout`,
    /// `maxResponseContentLength`), parsed by the component crate's settings grammar.
    pub(crate) deployment: Deployment,
    /// `proxyUrl` with `proxyHeaders`, `ssl.proxyVerificationMode`, `proxyBypassHosts` and
    /// `proxyOnlyHosts` (C129).
    pub(crate) proxy: Option<Proxy>,
    /// `ssl.verificationMode` (default `full`).
    pub(crate) verification: Verification,
    /// `customHostSettings`.
    pub(crate) custom_hosts: Vec<CustomHostSettings>,
    /// `denyPrivateNetworks` (default `false`): refuse targets that resolve to loopback,
    /// private, link-local or other non-public addresses (see `outbound::ssrf`).
    pub(crate) deny_private_networks: bool,
    /// `guestMemoryLimit` and `guestTimeLimit` (not Kibana settings): what each execution's
    /// sandbox may use (defaults: 256 MiB, the most the pooling allocator reserves, and 10 s of
    /// guest time).
    pub(crate) sandbox: SandboxLimits,
    /// `serve`'s own keys (not Kibana settings): `shutdownGrace`, connection hygiene and
    /// admission.
    pub(crate) serve: ServeSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deployment: Deployment::default(),
            proxy: None,
            verification: Verification::Full,
            custom_hosts: Vec::new(),
            deny_private_networks: false,
            sandbox: SandboxLimits::default(),
            serve: ServeSettings::default(),
        }
    }
}

impl Settings {
    /// `maxExecutions`: how many executions `serve` runs at once, one sandbox instance slot
    /// each (the harness's pool is sized with it).
    pub fn max_executions(&self) -> u32 {
        self.serve.max_executions
    }

    /// The deployment's secrets, for redaction (C121a): the proxy's.
    pub(crate) fn secrets(&self) -> Secrets {
        self.proxy
            .as_ref()
            .map(|proxy| proxy.secrets().clone())
            .unwrap_or_default()
    }

    /// Reads and validates a settings file.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
            file: file.clone(),
            message: format!("cannot read the settings file: {e}"),
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| SettingsError {
            file: file.clone(),
            message: format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        })?;
        Self::from_json(&value).map_err(|message| SettingsError { file, message })
    }

    /// Validates a settings object; the error names the offending key.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let Value::Object(top) = value else {
            return Err("the settings must be a JSON object".to_owned());
        };
        let flat = flatten(top)?;
        let mut s = Settings::default();
        // The proxy is built once every key is read (its parts may come in any order).
        let mut proxy_url = None;
        let mut proxy_headers = Vec::new();
        let mut proxy_verification = Verification::Full;
        let mut proxy_bypass_hosts = None;
        let mut proxy_only_hosts = None;
        for (key, v) in &flat {
            match key.as_str() {
                k if grammar::owner(k) == Some(Owner::Component) => {
                    grammar::apply(&mut s.deployment, key, &grammar_value(v))?;
                }
                "proxyUrl" => proxy_url = Some(string(key, v)?),
                "proxyHeaders" => {
                    let Value::Object(map) = v else {
                        return Err(format!("[{key}]: expected an object of strings"));
                    };
                    for (name, value) in map {
                        let value = value
                            .as_str()
                            .ok_or_else(|| format!("[{key}.{name}]: expected a string"))?;
                        proxy_headers.push((name.clone(), value.to_owned()));
                    }
                }
                "denyPrivateNetworks" => {
                    s.deny_private_networks = v
                        .as_bool()
                        .ok_or_else(|| format!("[{key}]: expected a boolean"))?;
                }
                "guestMemoryLimit" => {
                    let bytes = byte_size(key, v)?;
                    let max = MAX_MEMORY_BYTES as u64;
                    if !(1 << 20..=max).contains(&bytes) {
                        return Err(format!(
                            "[{key}]: expected a size between 1mb and {}mb, got {v}",
                            max >> 20
                        ));
                    }
                    s.sandbox.memory_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
                }
                "guestTimeLimit" => {
                    let limit = duration(key, v)?;
                    if limit.is_zero() {
                        return Err(format!("[{key}]: must be more than 0 ms"));
                    }
                    s.sandbox.guest_time = limit;
                }
                k if s.serve.apply(k, || duration(key, v), || count(key, v))? => {}
                "proxyBypassHosts" => proxy_bypass_hosts = Some(string_list(key, v)?),
                "proxyOnlyHosts" => proxy_only_hosts = Some(string_list(key, v)?),
                "ssl.verificationMode" => s.verification = verification(key, v)?,
                "ssl.proxyVerificationMode" => proxy_verification = verification(key, v)?,
                "customHostSettings" => s.custom_hosts = custom_hosts(key, v)?,
                // Every key of `grammar::KEYS` is handled above (a test checks it).
                other => return Err(format!("unknown setting \"{other}\"")),
            }
        }
        if proxy_bypass_hosts.is_some() && proxy_only_hosts.is_some() {
            // C129
            return Err(
                "proxyBypassHosts and proxyOnlyHosts cannot be used at the same time".to_owned(),
            );
        }
        // C129: a proxy that cannot be used is a settings error, never a silent bypass.
        s.proxy = proxy_url
            .map(|url| {
                Proxy::new(ProxyConfig {
                    url,
                    headers: &proxy_headers,
                    verification: proxy_verification,
                    bypass_hosts: proxy_bypass_hosts,
                    only_hosts: proxy_only_hosts,
                })
            })
            .transpose()?;
        Ok(s)
    }
}

/// The first `customHostSettings` entry for this origin (C128; host names compared by
/// [`host_name::same_host`], so one trailing dot is ignored, C67 amended).
pub(crate) fn custom_host<'a>(
    custom_hosts: &'a [CustomHostSettings],
    scheme: &str,
    host: &str,
    port: u16,
) -> Option<&'a CustomHostSettings> {
    custom_hosts.iter().find(|c| {
        c.scheme.eq_ignore_ascii_case(scheme)
            && host_name::same_host(&c.host, host)
            && c.port == port
    })
}

/// Accepts both `{"ssl": {"verificationMode": ..}}` and `{"ssl.verificationMode": ..}`.
fn flatten(top: &Map<String, Value>) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for (key, value) in top {
        if key == "ssl" {
            let Value::Object(ssl) = value else {
                return Err("[ssl]: expected an object".to_owned());
            };
            for (k, v) in ssl {
                out.push((format!("ssl.{k}"), v.clone()));
            }
        } else {
            out.push((key.clone(), value.clone()));
        }
    }
    Ok(out)
}

fn string<'a>(key: &str, v: &'a Value) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("[{key}]: expected a string"))
}

fn verification(key: &str, v: &Value) -> Result<Verification, String> {
    match v.as_str() {
        Some("full") => Ok(Verification::Full),
        Some("certificate") => Ok(Verification::Certificate),
        Some("none") => Ok(Verification::None),
        _ => Err(format!(
            "[{key}]: expected one of [full, certificate, none] but got [{v}]"
        )),
    }
}

/// `v` as the component's JSON reads it, for the shared grammar.
fn grammar_value(v: &Value) -> GrammarValue {
    GrammarValue::parse(v.to_string().as_bytes()).unwrap_or(GrammarValue::Null)
}

fn string_list(key: &str, v: &Value) -> Result<Vec<String>, String> {
    grammar::string_list(key, &grammar_value(v))
}

fn duration(key: &str, v: &Value) -> Result<Duration, String> {
    grammar::duration_ms(key, &grammar_value(v)).map(Duration::from_millis)
}

fn count(key: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("[{key}]: expected a whole number, got {v}"))
}

fn byte_size(key: &str, v: &Value) -> Result<u64, String> {
    grammar::byte_size(key, &grammar_value(v))
}

fn custom_hosts(key: &str, v: &Value) -> Result<Vec<CustomHostSettings>, String> {
    let Value::Array(items) = v else {
        return Err(format!("[{key}]: expected an array"));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{key}.{i}");
        let Value::Object(entry) = item else {
            return Err(format!("[{path}]: expected an object"));
        };
        let mut url = None;
        let mut verification_mode = None;
        let mut ca_der = Vec::new();
        for (k, v) in flatten(entry)? {
            match k.as_str() {
                "url" => url = Some(string(&format!("{path}.url"), &v)?.to_owned()),
                "ssl.verificationMode" => {
                    verification_mode =
                        Some(verification(&format!("{path}.ssl.verificationMode"), &v)?);
                }
                "ssl.certificateAuthoritiesData" => {
                    let field = format!("{path}.ssl.certificateAuthoritiesData");
                    ca_der = pem_certificates(string(&field, &v)?)
                        .map_err(|e| format!("[{field}]: {e}"))?;
                }
                other => return Err(format!("unknown setting \"{path}.{other}\"")),
            }
        }
        let url = url.ok_or_else(|| format!("[{path}.url]: required"))?;
        let parsed =
            url::Url::parse(&url).map_err(|e| format!("[{path}.url]: invalid URL: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("[{path}.url]: URL must contain a host name"))?
            .to_ascii_lowercase();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("[{path}.url]: URL must use http or https"))?;
        out.push(CustomHostSettings {
            scheme: parsed.scheme().to_owned(),
            host,
            port,
            verification: verification_mode,
            ca_der,
        });
    }
    Ok(out)
}

/// DER certificates from PEM text; at least one is required.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no \"-----BEGIN CERTIFICATE-----\" block found".to_owned());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let s = Settings::from_json(&json!({})).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.deployment.allowed_hosts, vec!["*"]);
        assert_eq!(s.deployment.response_timeout_ms, 60_000);
        assert_eq!(s.deployment.max_response_content_length, 1_048_576);
    }

    #[test]
    fn units_and_forms() {
        let s = Settings::from_json(&json!({
            "responseTimeout": "2m", "maxResponseContentLength": "512kb",
            "ssl": {"verificationMode": "none"}
        }))
        .unwrap();
        assert_eq!(s.deployment.response_timeout_ms, 120_000);
        assert_eq!(s.deployment.max_response_content_length, 512 * 1024);
        assert_eq!(s.verification, Verification::None);
        let s = Settings::from_json(&json!({"responseTimeout": 1500, "ssl.verificationMode": "certificate", "maxResponseContentLength": 10})).unwrap();
        assert_eq!(s.deployment.response_timeout_ms, 1500);
        assert_eq!(s.verification, Verification::Certificate);
        assert_eq!(s.deployment.max_response_content_length, 10);
    }

    #[test]
    fn deny_private_networks_is_an_opt_in_boolean() {
        assert!(!Settings::default().deny_private_networks);
        let s = Settings::from_json(&json!({"denyPrivateNetworks": true})).unwrap();
        assert!(s.deny_private_networks);
        let e = Settings::from_json(&json!({"denyPrivateNetworks": "yes"})).unwrap_err();
        assert_eq!(e, "[denyPrivateNetworks]: expected a boolean");
    }

    #[test]
    fn shutdown_grace_is_a_duration() {
        assert_eq!(
            Settings::default().serve.shutdown_grace,
            Duration::from_secs(30)
        );
        let s = Settings::from_json(&json!({"shutdownGrace": "2m"})).unwrap();
        assert_eq!(s.serve.shutdown_grace, Duration::from_secs(120));
        let s = Settings::from_json(&json!({"shutdownGrace": 0})).unwrap();
        assert_eq!(s.serve.shutdown_grace, Duration::ZERO);
        let e = Settings::from_json(&json!({"shutdownGrace": "later"})).unwrap_err();
        assert!(e.starts_with("[shutdownGrace]: expected a duration"), "{e}");
    }

    #[test]
    fn serve_limits() {
        let s = Settings::from_json(&json!({
            "headerReadTimeout": "2s", "idleTimeout": 500, "requestBodyTimeout": "1m",
            "queueTimeout": "3s", "maxConnections": 100,
            "maxExecutionsPerConnector": 8, "maxExecutionsPerClient": 4, "maxExecutions": 9000,
        }))
        .unwrap();
        assert_eq!(s.max_executions(), 9000);
        assert_eq!(Settings::default().max_executions(), 64);
        assert_eq!(s.serve.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.serve.idle_timeout, Duration::from_millis(500));
        assert_eq!(s.serve.request_body_timeout, Duration::from_secs(60));
        assert_eq!(s.serve.queue_timeout, Duration::from_secs(3));
        assert_eq!(s.serve.max_connections, Some(100));
        assert_eq!(s.serve.max_executions_per_connector, Some(8));
        assert_eq!(s.serve.max_executions_per_client, Some(4));
        assert_eq!(Settings::default().serve.usage_sink_buffer, 100_000);
        let s = Settings::from_json(&json!({"usageSinkBuffer": 20})).unwrap();
        assert_eq!(s.serve.usage_sink_buffer, 20);
        for (key, value, expected) in [
            (
                "headerReadTimeout",
                json!(0),
                "[headerReadTimeout]: must be more than 0 ms",
            ),
            (
                "queueTimeout",
                json!("soon"),
                "[queueTimeout]: expected a duration",
            ),
            (
                "maxConnections",
                json!(0),
                "[maxConnections]: expected a whole number of at least 1",
            ),
            (
                "usageSinkBuffer",
                json!(0),
                "[usageSinkBuffer]: expected a whole number of at least 1",
            ),
            (
                "maxExecutions",
                json!(0),
                "[maxExecutions]: expected a whole number from 1 to 16384, got 0",
            ),
            (
                "maxExecutions",
                json!(20000),
                "[maxExecutions]: expected a whole number from 1 to 16384, got 20000",
            ),
            (
                "maxExecutionsPerClient",
                json!("4"),
                "[maxExecutionsPerClient]: expected a whole number",
            ),
        ] {
            let e = Settings::from_json(&json!({ key: value })).unwrap_err();
            assert!(e.starts_with(expected), "{key}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = Settings::from_json(&json!({"allowedHost": ["a"]})).unwrap_err();
        assert_eq!(e, "unknown setting \"allowedHost\"");
        let e = Settings::from_json(&json!({"responseTimeout": "soon"})).unwrap_err();
        assert!(e.starts_with("[responseTimeout]: "), "{e}");
        let e = Settings::from_json(&json!({"ssl": {"verificationMode": "strict"}})).unwrap_err();
        assert!(
            e.starts_with("[ssl.verificationMode]: expected one of"),
            "{e}"
        );
        // C129
        let e = Settings::from_json(&json!({"proxyBypassHosts": [], "proxyOnlyHosts": []}))
            .unwrap_err();
        assert_eq!(
            e,
            "proxyBypassHosts and proxyOnlyHosts cannot be used at the same time"
        );
    }

    #[test]
    fn c128_c67_custom_host_matching() {
        let s = Settings::from_json(&json!({"customHostSettings": [
            {"url": "https://GW.example.com", "ssl": {"verificationMode": "none"}},
            {"url": "https://gw.example.com:8443", "ssl.verificationMode": "certificate"}
        ]}))
        .unwrap();
        assert_eq!(
            custom_host(&s.custom_hosts, "https", "gw.example.com", 443)
                .unwrap()
                .verification,
            Some(Verification::None)
        );
        assert_eq!(
            custom_host(&s.custom_hosts, "https", "GW.EXAMPLE.COM", 8443)
                .unwrap()
                .verification,
            Some(Verification::Certificate)
        );
        assert!(custom_host(&s.custom_hosts, "http", "gw.example.com", 443).is_none());
        // C67 (amended): one trailing dot is ignored on either side.
        assert_eq!(
            custom_host(&s.custom_hosts, "https", "gw.example.com.", 443)
                .unwrap()
                .verification,
            Some(Verification::None)
        );
        let dotted = Settings::from_json(&json!({"customHostSettings": [
            {"url": "https://gw.example.com.", "ssl": {"verificationMode": "none"}}
        ]}))
        .unwrap();
        assert!(custom_host(&dotted.custom_hosts, "https", "gw.example.com", 443).is_some());
        assert!(custom_host(&dotted.custom_hosts, "https", "gw.example.com..", 443).is_none());
        let e = Settings::from_json(&json!({"customHostSettings": [{"url": "https://h", "ssl": {"certificateAuthoritiesData": "nope"}}]})).unwrap_err();
        assert!(
            e.starts_with("[customHostSettings.0.ssl.certificateAuthoritiesData]: "),
            "{e}"
        );
    }

    // One grammar: every key the settings grammar lists is one the harness handles, the
    // component's keys through the component crate's own parser.
    #[test]
    fn every_key_of_the_shared_grammar_is_handled() {
        for (key, _) in grammar::KEYS {
            let (top, leaf) = match key.split_once('.') {
                Some((top, leaf)) => (top.to_owned(), serde_json::json!({ leaf: 12.5 })),
                None => ((*key).to_owned(), serde_json::json!(12.5)),
            };
            let error = Settings::from_json(&serde_json::json!({ top: leaf }))
                .expect_err("12.5 is no valid value for any key");
            assert!(!error.contains("unknown setting"), "{key}: {error}");
        }
        assert!(
            Settings::from_json(&serde_json::json!({"bogus": 1}))
                .unwrap_err()
                .contains("unknown setting")
        );
    }
}
