//! Connector config and secrets: the Kibana JSON, validated (contract sections 1 and 2).
//!
//! [`validate_connector`] is the entry point: it checks `config` (C5–C14) and `secrets`
//! (C18–C31, with [`crate::pki`]) and returns either a [`Connector`] or every problem found, as
//! the lines of C17 ([`ValidationErrors`]). [`host_is_allowed`] and [`url_host_name`] are the
//! allow-list helpers of C11/C12, used again when requests are built (C44) and redirected (C66).
//! [`Connector::tls_profile`] is what the host needs for TLS (C122–C124).

use crate::json::{self, Object, Value};
pub use crate::pki::KeyFormat;
use crate::pki::{self, PkiError, PkiField, PrivateKey};
use crate::schema::{self, Expected, Problem};
use std::fmt;
use url::Url;

/// Kibana's connector type id.
pub(crate) const CONNECTOR_TYPE_ID: &str = ".gen-ai";
/// The connector type's display name (C34).
pub(crate) const CONNECTOR_TYPE_NAME: &str = "OpenAI";
/// Model used for OpenAI when the config names none (C9).
pub(crate) const DEFAULT_MODEL: &str = "gpt-4.1";
/// OpenAI's chat completions URL (C54).
pub(crate) const OPENAI_CHAT_URL: &str = "https://api.openai.com/v1/chat/completions";
/// OpenAI's legacy completions URL (C54).
pub(crate) const OPENAI_LEGACY_COMPLETION_URL: &str = "https://api.openai.com/v1/completions";

/// The API provider (`config.apiProvider`, C5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `OpenAI`
    OpenAi,
    /// `Azure OpenAI`
    AzureOpenAi,
    /// `Other` (any OpenAI-compatible service)
    Other,
}

impl Provider {
    /// Kibana's value string for this provider.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "OpenAI",
            Provider::AzureOpenAi => "Azure OpenAI",
            Provider::Other => "Other",
        }
    }

    /// Parses Kibana's value string (case-sensitive, C5).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OpenAI" => Some(Provider::OpenAi),
            "Azure OpenAI" => Some(Provider::AzureOpenAi),
            "Other" => Some(Provider::Other),
            _ => None,
        }
    }
}

/// TLS server verification mode (C123, C125, C126).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerificationMode {
    /// Chain, validity and host name.
    #[default]
    Full,
    /// Chain and validity; any host name.
    Certificate,
    /// Nothing is checked.
    None,
}

impl VerificationMode {
    /// The three accepted strings, in schema order.
    pub(crate) const NAMES: [&'static str; 3] = ["full", "certificate", "none"];

    /// Kibana's value string.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationMode::Full => "full",
            VerificationMode::Certificate => "certificate",
            VerificationMode::None => "none",
        }
    }

    /// Parses `full`, `certificate` or `none`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(VerificationMode::Full),
            "certificate" => Some(VerificationMode::Certificate),
            "none" => Some(VerificationMode::None),
            _ => None,
        }
    }
}

/// A validated `config` object (section 1). `Debug` hides custom header values (C14).
#[derive(Clone, PartialEq)]
pub struct Config {
    /// `apiProvider`.
    pub provider: Provider,
    /// `apiUrl` exactly as configured (before C45 normalisation).
    pub api_url: String,
    /// `defaultModel`, with the OpenAI default filled in (C9).
    pub default_model: Option<String>,
    /// `organizationId` (OpenAI only).
    pub organization_id: Option<String>,
    /// `projectId` (OpenAI only).
    pub project_id: Option<String>,
    /// Custom `headers`, in input order (names validated by C13, values by C14).
    pub headers: Vec<(String, String)>,
    /// `verificationMode` (Other only); absent stays absent (C9).
    pub verification_mode: Option<VerificationMode>,
    /// The config as the get-connector API returns it: input plus defaults, numeric strings
    /// turned into numbers (C9).
    pub normalized: Object,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), REDACTED))
            .collect();
        let mut normalized = self.normalized.clone();
        if let Some(Value::Object(h)) = normalized.get_mut("headers") {
            for value in h.values_mut() {
                *value = Value::from(REDACTED);
            }
        }
        f.debug_struct("Config")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("default_model", &self.default_model)
            .field("organization_id", &self.organization_id)
            .field("project_id", &self.project_id)
            .field("headers", &headers)
            .field("verification_mode", &self.verification_mode)
            .field("normalized", &format_args!("{}", Value::Object(normalized)))
            .finish()
    }
}

/// A client identity for PKI mode (C21, C26, C28): DER certificates, leaf first, and the key.
///
/// `key_der` is the key as given, except that an ECDSA key stored without its public point is
/// re-encoded (same format) with it, so that every TLS stack accepts it (see
/// [`PrivateKey::der`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Certificate chain, leaf first (C26).
    pub chain_der: Vec<Vec<u8>>,
    /// The private key's DER bytes.
    pub key_der: Vec<u8>,
    /// Which encoding `key_der` uses.
    pub key_format: KeyFormat,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "chain_der",
                &format_args!("[{} certificate(s)]", self.chain_der.len()),
            )
            .field("key_der", &"[REDACTED]")
            .field("key_format", &self.key_format)
            .finish()
    }
}

/// Validated `secrets` (section 2). `Debug` never shows a secret value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secrets {
    /// `apiKey`, when given (may be absent in PKI mode, C23).
    pub api_key: Option<String>,
    /// The client identity in PKI mode (C21).
    pub identity: Option<ClientIdentity>,
    /// DER trust anchors from `caData` (C27, D3); empty when not given.
    pub ca_der: Vec<Vec<u8>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("identity", &self.identity)
            .field(
                "ca_der",
                &format_args!("[{} certificate(s)]", self.ca_der.len()),
            )
            .finish()
    }
}

/// A validated connector: identity, config and secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct Connector {
    /// Connector id.
    pub id: String,
    /// Connector name.
    pub name: String,
    /// Validated config.
    pub config: Config,
    /// Validated secrets.
    pub secrets: Secrets,
}

const REDACTED: &str = "[REDACTED]";

/// Prefix of every config problem line (C17).
pub(crate) const CONFIG_PREFIX: &str = "error validating action type config: ";
/// Prefix of every secrets problem line (C17).
pub(crate) const SECRETS_PREFIX: &str = "error validating action type secrets: ";
/// The wrapper of provider and URL problems (C6, C11, C17).
const ACTION_ERROR: &str = "Error configuring OpenAI action: Error: ";

/// Every problem found in a connector, as the bare problem texts of C1–C31 (no C17 prefix).
/// No entry contains a secret value (C32).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    /// Config problems, in C3/C11 order.
    pub config: Vec<String>,
    /// Secrets problems, in C3/C31 order.
    pub secrets: Vec<String>,
}

impl ValidationErrors {
    /// The C17 lines: config problems first, each prefixed
    /// `error validating action type config: `, then the secrets problems prefixed
    /// `error validating action type secrets: `.
    pub fn lines(&self) -> Vec<String> {
        let config = self.config.iter().map(|p| format!("{CONFIG_PREFIX}{p}"));
        let secrets = self.secrets.iter().map(|p| format!("{SECRETS_PREFIX}{p}"));
        config.chain(secrets).collect()
    }

    /// `true` when there is no problem at all.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty() && self.secrets.is_empty()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ValidationErrors {}

/// Validates a connector (C16): its `config` (section 1) and `secrets` (section 2) against the
/// deployment's `allowedHosts` (C11). Every problem is reported (C17, C31); on success the
/// config is normalised (C9) and the PKI secrets are decoded to DER.
///
/// Secrets checks that depend on the provider (C20) run only when `apiProvider` is valid. Any
/// secret string of 8 or more characters that shows up inside a message is replaced by
/// `[REDACTED]` (C32; the contract names `apiKey`, and the PKI values are secrets too).
pub(crate) fn validate_connector(
    id: &str,
    name: &str,
    config: &Value,
    secrets: &Value,
    allowed_hosts: &[String],
) -> Result<Connector, ValidationErrors> {
    let provider = config
        .get("apiProvider")
        .and_then(Value::as_str)
        .and_then(Provider::parse);
    let config_result = validate_config(config, allowed_hosts);
    let secrets_result = validate_secrets(secrets, provider);
    match (config_result, secrets_result) {
        (Ok(config), Ok(secrets)) => Ok(Connector {
            id: id.to_owned(),
            name: name.to_owned(),
            config,
            secrets,
        }),
        (config_result, secrets_result) => {
            let secret_values = secret_strings(secrets);
            let redact = |lines: Vec<String>| -> Vec<String> {
                lines
                    .into_iter()
                    .map(|line| redact_secrets(line, &secret_values))
                    .collect()
            };
            Err(ValidationErrors {
                config: redact(config_result.err().unwrap_or_default()),
                secrets: redact(secrets_result.err().unwrap_or_default()),
            })
        }
    }
}

/// The string values of `secrets` long enough to be redacted (C32), longest first so that a
/// secret containing another is replaced whole.
fn secret_strings(secrets: &Value) -> Vec<&str> {
    let mut values: Vec<&str> = secrets
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(Value::as_str)
        .filter(|s| s.chars().count() >= 8)
        .collect();
    values.sort_by_key(|s| std::cmp::Reverse(s.len()));
    values
}

fn redact_secrets(mut line: String, secrets: &[&str]) -> String {
    for secret in secrets {
        if line.contains(secret) {
            line = line.replace(secret, REDACTED);
        }
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Config (section 1)
// ---------------------------------------------------------------------------------------------

/// The config fields of the C7 table, in table order.
const FIELD_ORDER: [&str; 10] = [
    "apiProvider",
    "apiUrl",
    "defaultModel",
    "organizationId",
    "projectId",
    "headers",
    "contextWindowLength",
    "temperature",
    "verificationMode",
    "enableNativeFunctionCalling",
];

/// Whether `provider` accepts config field `field` (C7).
fn accepts(provider: Provider, field: &str) -> bool {
    match field {
        "apiProvider"
        | "apiUrl"
        | "defaultModel"
        | "headers"
        | "contextWindowLength"
        | "temperature" => true,
        "organizationId" | "projectId" => provider == Provider::OpenAi,
        "verificationMode" | "enableNativeFunctionCalling" => provider == Provider::Other,
        _ => false,
    }
}

/// Validates `config` alone (section 1) and returns its problems as bare lines (C1–C14):
/// the object check (C5); then the provider, which when unsupported is the only problem (C6);
/// then each field in the C7 table order, unknown keys last (C3); then the first failing URL
/// check (C11).
pub(crate) fn validate_config(
    config: &Value,
    allowed_hosts: &[String],
) -> Result<Config, Vec<String>> {
    let Some(obj) = config.as_object() else {
        return Err(vec![
            Problem::wrong_type("", Expected::Object, config).to_string(),
        ]);
    };
    let provider = match obj.get("apiProvider") {
        Some(Value::String(s)) => match Provider::parse(s) {
            Some(p) => p,
            None if s.is_empty() => return Err(vec![unsupported_provider(None)]),
            None => return Err(vec![unsupported_provider(Some(s))]),
        },
        _ => return Err(vec![unsupported_provider(None)]),
    };

    let mut problems = Vec::new();
    let mut normalized = obj.clone();
    let mut api_url = None;
    let mut default_model = None;
    let mut organization_id = None;
    let mut project_id = None;
    let mut headers = Vec::new();
    let mut verification_mode = None;

    for field in FIELD_ORDER {
        if !accepts(provider, field) {
            continue;
        }
        let value = obj.get(field);
        match field {
            "apiProvider" => {}
            "apiUrl" => api_url = required_string(field, value, &mut problems),
            "defaultModel" => {
                default_model = if provider == Provider::Other {
                    required_string(field, value, &mut problems)
                } else {
                    optional_string(field, value, &mut problems)
                };
            }
            "organizationId" => organization_id = optional_string(field, value, &mut problems),
            "projectId" => project_id = optional_string(field, value, &mut problems),
            "headers" => headers = check_headers(value, &mut problems),
            "contextWindowLength" | "temperature" => match value.map(schema::numeric) {
                None => {}
                Some(Some(number)) => {
                    normalized.insert(field.to_owned(), Value::Number(number));
                }
                Some(None) => problems.push(wrong_type(field, Expected::Number, value)),
            },
            "verificationMode" => {
                verification_mode = match value {
                    None => None,
                    Some(Value::String(s)) if VerificationMode::parse(s).is_some() => {
                        VerificationMode::parse(s)
                    }
                    Some(other) => {
                        problems.push(
                            Problem::not_one_of(field, &VerificationMode::NAMES, other).to_string(),
                        );
                        None
                    }
                }
            }
            "enableNativeFunctionCalling" => {
                if let Some(v) = value
                    && !matches!(v, Value::Bool(_))
                {
                    problems.push(wrong_type(field, Expected::Boolean, Some(v)));
                }
            }
            _ => {}
        }
    }

    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !accepts(provider, k))
        .collect();
    if !unknown.is_empty() {
        problems.push(Problem::unknown_keys("", unknown).to_string());
    }

    if let Some(url) = &api_url
        && let Err(problem) = check_api_url(url, allowed_hosts)
    {
        problems.push(problem);
    }

    let Some(api_url) = api_url else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    if provider == Provider::OpenAi && default_model.is_none() {
        normalized.insert("defaultModel".to_owned(), Value::from(DEFAULT_MODEL));
        default_model = Some(DEFAULT_MODEL.to_owned());
    }
    Ok(Config {
        provider,
        api_url,
        default_model,
        organization_id,
        project_id,
        headers,
        verification_mode,
        normalized,
    })
}

/// C6: the message for an unsupported `apiProvider`; the value is shown only when it is a
/// non-empty string.
fn unsupported_provider(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{ACTION_ERROR}API Provider is not supported: {v}"),
        None => format!("{ACTION_ERROR}API Provider is not supported"),
    }
}

fn wrong_type(path: &str, expected: Expected, value: Option<&Value>) -> String {
    match value {
        Some(v) => Problem::wrong_type(path, expected, v).to_string(),
        None => Problem::missing(path, expected).to_string(),
    }
}

/// A required string field (C8); `null` is a wrong type.
fn required_string(
    field: &str,
    value: Option<&Value>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match value {
        Some(Value::String(s)) => Some(s.clone()),
        other => {
            problems.push(wrong_type(field, Expected::String, other));
            None
        }
    }
}

/// An optional string field; `null` is a wrong type (C3).
fn optional_string(
    field: &str,
    value: Option<&Value>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match value {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(wrong_type(field, Expected::String, Some(other)));
            None
        }
    }
}

/// `true` for an HTTP token (RFC 9110 §5.6.2): one or more of letters, digits and
/// ``!#$%&'*+-.^_`|~`` (C13).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// C13/C14: custom headers, kept in input order (C15 is applied when the request is built).
///
/// The name is quoted as a JSON string, which for a valid name is just `"<name>"` and keeps a
/// name holding a line break on one line. A header whose name is invalid gets no further
/// checks (its `[headers.<name>]` path would carry the same bad characters). Values never
/// appear in a message.
fn check_headers(value: Option<&Value>, problems: &mut Vec<String>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if !is_header_name(name) {
                    problems.push(
                        Problem::new(
                            "headers",
                            format!("invalid header name {}", json::quote(name)),
                        )
                        .to_string(),
                    );
                    continue;
                }
                let path = schema::join_path("headers", name);
                match value {
                    Value::String(s) if s.contains(['\r', '\n', '\0']) => problems.push(
                        Problem::new(path, "header value must not contain CR, LF or NUL")
                            .to_string(),
                    ),
                    Value::String(s) => headers.push((name.clone(), s.clone())),
                    other => problems
                        .push(Problem::wrong_type(path, Expected::String, other).to_string()),
                }
            }
        }
        Some(other) => {
            problems.push(Problem::wrong_type("headers", Expected::Object, other).to_string())
        }
    }
    headers
}

/// C11: the URL checks in order; the first failure is the problem.
fn check_api_url(api_url: &str, allowed_hosts: &[String]) -> Result<(), String> {
    let Ok(url) = Url::parse(api_url) else {
        return Err(format!("{ACTION_ERROR}URL Error: Invalid URL: {api_url}"));
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{ACTION_ERROR}URL Error: URL must contain hostname"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{ACTION_ERROR}URL Error: Invalid protocol"));
    }
    if !host_allowed(&url, allowed_hosts) {
        return Err(format!(
            "{ACTION_ERROR}error validating url: target url \"{api_url}\" is not added to the Kibana config xpack.actions.allowedHosts"
        ));
    }
    Ok(())
}

/// The WHATWG host name of `url` (C12): lower case, internationalised names in punycode, IPv6
/// in brackets, no port. `None` when `url` does not parse as an absolute URL or has no host.
pub(crate) fn url_host_name(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.host_str().filter(|h| !h.is_empty()).map(str::to_owned)
}

/// C11 step 4 with C12: `true` when `allowed_hosts` contains `*`, or when `url` parses and its
/// host name equals one of the entries ([`same_host`]: ASCII case and one trailing dot are
/// ignored on both sides, C67 amended). Ports play no part.
pub(crate) fn host_is_allowed(url: &str, allowed_hosts: &[String]) -> bool {
    if allowed_hosts.iter().any(|h| h == "*") {
        return true;
    }
    Url::parse(url).is_ok_and(|u| host_allowed(&u, allowed_hosts))
}

fn host_allowed(url: &Url, allowed_hosts: &[String]) -> bool {
    if allowed_hosts.iter().any(|h| h == "*") {
        return true;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    allowed_hosts.iter().any(|h| same_host(h, host))
}

/// A host name as it is compared and checked (C12; C67 amended): without one trailing dot, so
/// the absolute name `localhost.` is `localhost`. Only one dot goes: `localhost..` keeps an
/// empty label and stays another (invalid) name, and a lone `.` becomes the empty name, which
/// [`same_host`] never matches. The one place this component normalises a host name.
pub(crate) fn comparable_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// True when host names `a` and `b` are the same: compared as [`comparable_host`], ignoring
/// ASCII case (C12). An empty name (or a lone `.`) equals nothing, not even itself.
pub(crate) fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (comparable_host(a), comparable_host(b));
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

// ---------------------------------------------------------------------------------------------
// Secrets (section 2)
// ---------------------------------------------------------------------------------------------

/// The secrets fields, in the order their problems are listed (C3).
const SECRET_FIELDS: [&str; 4] = ["apiKey", "certificateData", "privateKeyData", "caData"];

/// One secrets field as found.
#[derive(Clone, Copy)]
enum Slot<'a> {
    /// Not in the object.
    Absent,
    /// Present but not a string; already reported (C18).
    WrongType,
    /// A string, possibly empty.
    Text(&'a str),
}

impl<'a> Slot<'a> {
    fn non_empty(self) -> Option<&'a str> {
        match self {
            Slot::Text(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

/// Validates `secrets` (section 2) for a config whose provider is `provider` (`None` when the
/// provider is invalid, which skips C20).
///
/// First the schema (C18, C19; unknown keys last, C3), then the rules that look at several
/// fields: C20, then key mode (C22, plus C27 for `caData`) or PKI mode (C23, then certificate,
/// key, CA and key match in the C31 order, every failure reported). A field already reported
/// by the schema step (wrong type, or empty) is not reported again as missing.
fn validate_secrets(secrets: &Value, provider: Option<Provider>) -> Result<Secrets, Vec<String>> {
    let Some(obj) = secrets.as_object() else {
        return Err(vec![
            Problem::wrong_type("", Expected::Object, secrets).to_string(),
        ]);
    };
    let mut problems = Vec::new();
    let slot = |key: &str| match obj.get(key) {
        None => Slot::Absent,
        Some(Value::String(s)) => Slot::Text(s),
        Some(_) => Slot::WrongType,
    };
    let [api_key, certificate, private_key, ca] = SECRET_FIELDS.map(slot);
    // C21: PKI mode.
    let pki_mode = certificate.non_empty().is_some() || private_key.non_empty().is_some();

    // Schema step: C18 types, C19 empty strings.
    for (field, slot) in SECRET_FIELDS
        .iter()
        .zip([api_key, certificate, private_key, ca])
    {
        match slot {
            Slot::WrongType => problems.push(wrong_type(field, Expected::String, obj.get(*field))),
            Slot::Text("") if *field != "apiKey" || pki_mode => {
                problems.push(Problem::empty(*field).to_string());
            }
            _ => {}
        }
    }
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !SECRET_FIELDS.contains(k))
        .collect();
    if !unknown.is_empty() {
        problems.push(Problem::unknown_keys("", unknown).to_string());
    }

    // C20 (D2).
    let has_pki_field = [certificate, private_key, ca]
        .iter()
        .any(|s| !matches!(s, Slot::Absent));
    if matches!(provider, Some(Provider::OpenAi | Provider::AzureOpenAi)) && has_pki_field {
        problems.push("PKI authentication is only supported for the Other provider".to_owned());
        return Err(problems);
    }

    let mut identity = None;
    let mut ca_der = Vec::new();
    if pki_mode {
        // C23.
        if matches!(certificate, Slot::Absent) {
            problems.push("Certificate data must be provided for PKI".to_owned());
        }
        if matches!(private_key, Slot::Absent) {
            problems.push("Private key data must be provided for PKI".to_owned());
        }
        let mut pki_problem = |e: PkiError| problems.push(e.to_string());
        // C31: certificate (C24, C25), key (C24, C28), CA (C24, C27), then C29.
        let chain = certificate.non_empty().and_then(|v| {
            pki::certificates_from_base64(PkiField::Certificate, v)
                .map_err(&mut pki_problem)
                .ok()
        });
        let key: Option<PrivateKey> = private_key.non_empty().and_then(|v| {
            pki::private_key_from_base64(v)
                .map_err(&mut pki_problem)
                .ok()
        });
        if let Some(v) = ca.non_empty() {
            match pki::certificates_from_base64(PkiField::Ca, v) {
                Ok(certs) => ca_der = certs,
                Err(e) => pki_problem(e),
            }
        }
        if let (Some(chain), Some(key)) = (chain, key) {
            match pki::check_key_matches(&key, &chain[0]) {
                Ok(()) => {
                    identity = Some(ClientIdentity {
                        chain_der: chain,
                        key_format: key.format(),
                        key_der: key.into_der(),
                    });
                }
                Err(e) => pki_problem(e),
            }
        }
    } else {
        // C22: key mode needs an apiKey; `caData` alone is checked as in C27 (D3).
        if matches!(api_key, Slot::Absent | Slot::Text("")) {
            problems.push(Problem::missing("apiKey", Expected::String).to_string());
        }
        if let Some(v) = ca.non_empty() {
            match pki::certificates_from_base64(PkiField::Ca, v) {
                Ok(certs) => ca_der = certs,
                Err(e) => problems.push(e.to_string()),
            }
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Secrets {
        api_key: api_key.non_empty().map(str::to_owned),
        identity,
        ca_der,
    })
}

/// The TLS settings a connector brings to its requests (C122–C124), for the host.
/// `Debug` shows no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsProfile {
    /// Server verification: the config's `verificationMode`, or `full` when absent (C123, D1).
    pub verification: VerificationMode,
    /// The client identity in PKI mode (C127).
    pub identity: Option<ClientIdentity>,
    /// Trust anchors from `caData`, DER; when non-empty they replace the default roots (C124).
    pub ca_der: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsProfile")
            .field("verification", &self.verification)
            .field("identity", &self.identity)
            .field(
                "ca_der",
                &format_args!("[{} certificate(s)]", self.ca_der.len()),
            )
            .finish()
    }
}

impl Connector {
    /// `true` in PKI mode (C21): the secrets hold a client certificate and key.
    pub(crate) fn pki_mode(&self) -> bool {
        self.secrets.identity.is_some()
    }

    /// The connector's own TLS settings (C122): `Some` only when the provider is Other, the
    /// `apiUrl` is `https`, and the secrets are in PKI mode or hold `caData`. Otherwise only the
    /// deployment's TLS settings apply and this is `None`.
    pub fn tls_profile(&self) -> Option<TlsProfile> {
        let https = Url::parse(&self.config.api_url).is_ok_and(|u| u.scheme() == "https");
        if self.config.provider != Provider::Other
            || !https
            || (!self.pki_mode() && self.secrets.ca_der.is_empty())
        {
            return None;
        }
        Some(TlsProfile {
            verification: self.config.verification_mode.unwrap_or_default(),
            identity: self.secrets.identity.clone(),
            ca_der: self.secrets.ca_der.clone(),
        })
    }
}

// The tests build certificates with rcgen, a native-only dev-dependency.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        Value::parse(text.as_bytes()).unwrap()
    }

    fn all_hosts() -> Vec<String> {
        vec!["*".to_owned()]
    }

    /// The config problems of `config` (panics when it is valid).
    fn config_problems(config: &str) -> Vec<String> {
        validate_config(&json(config), &all_hosts()).expect_err("config must be invalid")
    }

    fn config_ok(config: &str) -> Config {
        validate_config(&json(config), &all_hosts()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The C17 lines for a connector.
    fn lines(config: &str, secrets: &str) -> Vec<String> {
        validate_connector("id", "name", &json(config), &json(secrets), &all_hosts())
            .expect_err("connector must be invalid")
            .lines()
    }

    fn connector(config: &str, secrets: &str) -> Connector {
        validate_connector("id", "name", &json(config), &json(secrets), &all_hosts())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const OPENAI: &str =
        r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}"#;
    const OTHER: &str = r#"{"apiProvider":"Other","apiUrl":"https://llm.local/v1/chat/completions","defaultModel":"m"}"#;
    const KEY: &str = r#"{"apiKey":"sk-0123456789"}"#;

    // ---- C5, C6 ---------------------------------------------------------------------------

    #[test]
    fn c5_config_must_be_an_object() {
        for (config, actual) in [
            ("null", "null"),
            ("[]", "Array"),
            ("\"x\"", "string"),
            ("1", "number"),
            ("true", "boolean"),
        ] {
            assert_eq!(
                config_problems(config),
                vec![format!(
                    "expected value of type [object] but got [{actual}]"
                )]
            );
        }
    }

    #[test]
    fn c6_unsupported_provider_is_the_only_problem() {
        let with = "Error configuring OpenAI action: Error: API Provider is not supported: openai";
        let without = "Error configuring OpenAI action: Error: API Provider is not supported";
        for (config, expected) in [
            (
                r#"{"apiProvider":"openai","apiUrl":"ftp://x","bogus":1}"#,
                with,
            ),
            (r#"{"apiUrl":1,"bogus":1}"#, without),
            (r#"{}"#, without),
            (r#"{"apiProvider":""}"#, without),
            (r#"{"apiProvider":null}"#, without),
            (r#"{"apiProvider":5,"headers":[]}"#, without),
            (r#"{"apiProvider":["OpenAI"]}"#, without),
        ] {
            assert_eq!(
                config_problems(config),
                vec![expected.to_owned()],
                "{config}"
            );
        }
        // Case-sensitive.
        assert_eq!(
            config_problems(r#"{"apiProvider":"azure openai","apiUrl":"https://x"}"#),
            vec![
                "Error configuring OpenAI action: Error: API Provider is not supported: azure openai"
            ]
        );
    }

    // ---- C7 -------------------------------------------------------------------------------

    #[test]
    fn c7_openai_fields() {
        let cfg = config_ok(
            r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions","defaultModel":"gpt-4o","organizationId":"org","projectId":"proj","headers":{"X-A":"1"},"contextWindowLength":128000,"temperature":0.2}"#,
        );
        assert_eq!(cfg.provider, Provider::OpenAi);
        assert_eq!(cfg.organization_id.as_deref(), Some("org"));
        assert_eq!(cfg.project_id.as_deref(), Some("proj"));
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"OpenAI","apiUrl":"https://a.b","verificationMode":"full","enableNativeFunctionCalling":true}"#
            ),
            vec![r#"Unrecognized keys: "verificationMode", "enableNativeFunctionCalling""#]
        );
    }

    #[test]
    fn c7_azure_fields() {
        let cfg = config_ok(
            r#"{"apiProvider":"Azure OpenAI","apiUrl":"https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=1","headers":{},"contextWindowLength":"8000","temperature":1}"#,
        );
        assert_eq!(cfg.provider, Provider::AzureOpenAi);
        assert_eq!(cfg.default_model, None, "Azure has no default model");
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"Azure OpenAI","projectId":"p","apiUrl":"https://a.b","organizationId":"o","verificationMode":"none","enableNativeFunctionCalling":false}"#
            ),
            vec![
                r#"Unrecognized keys: "projectId", "organizationId", "verificationMode", "enableNativeFunctionCalling""#
            ]
        );
    }

    #[test]
    fn c7_other_fields() {
        let cfg = config_ok(
            r#"{"apiProvider":"Other","apiUrl":"http://localhost:1234/v1/chat/completions","defaultModel":"local","verificationMode":"certificate","enableNativeFunctionCalling":true,"headers":{"X-B":"2"}}"#,
        );
        assert_eq!(cfg.provider, Provider::Other);
        assert_eq!(cfg.verification_mode, Some(VerificationMode::Certificate));
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"Other","organizationId":"o","apiUrl":"https://a.b","defaultModel":"m","projectId":"p"}"#
            ),
            vec![r#"Unrecognized keys: "organizationId", "projectId""#]
        );
    }

    #[test]
    fn c7_pki_fields_in_config_are_unknown_keys() {
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"Other","apiUrl":"https://a.b","defaultModel":"m","certificateData":"x","privateKeyData":"y","caData":"z"}"#
            ),
            vec![r#"Unrecognized keys: "certificateData", "privateKeyData", "caData""#]
        );
    }

    #[test]
    fn c3_field_problems_in_table_order_unknown_keys_last() {
        assert_eq!(
            config_problems(
                r#"{"zzz":1,"temperature":"hot","apiProvider":"Other","headers":{"X":1},"enableNativeFunctionCalling":"yes","verificationMode":"FULL","contextWindowLength":null,"aaa":2}"#
            ),
            vec![
                "[apiUrl]: expected value of type [string] but got [undefined]",
                "[defaultModel]: expected value of type [string] but got [undefined]",
                "[headers.X]: expected value of type [string] but got [number]",
                "[contextWindowLength]: expected value of type [number] but got [null]",
                "[temperature]: expected value of type [number] but got [string]",
                "[verificationMode]: expected one of [full, certificate, none] but got [FULL]",
                "[enableNativeFunctionCalling]: expected value of type [boolean] but got [string]",
                r#"Unrecognized keys: "zzz", "aaa""#,
            ]
        );
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"OpenAI","apiUrl":null,"defaultModel":1,"organizationId":{},"projectId":[],"headers":"h"}"#
            ),
            vec![
                "[apiUrl]: expected value of type [string] but got [null]",
                "[defaultModel]: expected value of type [string] but got [number]",
                "[organizationId]: expected value of type [string] but got [Object]",
                "[projectId]: expected value of type [string] but got [Array]",
                "[headers]: expected value of type [object] but got [string]",
            ]
        );
    }

    // ---- C8 -------------------------------------------------------------------------------

    #[test]
    fn c8_required_fields_and_enumeration() {
        assert_eq!(
            config_problems(r#"{"apiProvider":"OpenAI"}"#),
            vec!["[apiUrl]: expected value of type [string] but got [undefined]"]
        );
        assert_eq!(
            config_problems(r#"{"apiProvider":"Other","apiUrl":"https://a.b"}"#),
            vec!["[defaultModel]: expected value of type [string] but got [undefined]"]
        );
        for (mode, shown) in [
            ("\"sometimes\"", "sometimes"),
            ("1", "1"),
            ("null", "null"),
            ("\"\"", ""),
        ] {
            let config = format!(
                r#"{{"apiProvider":"Other","apiUrl":"https://a.b","defaultModel":"m","verificationMode":{mode}}}"#
            );
            assert_eq!(
                config_problems(&config),
                vec![format!(
                    "[verificationMode]: expected one of [full, certificate, none] but got [{shown}]"
                )]
            );
        }
        for mode in VerificationMode::NAMES {
            let config = format!(
                r#"{{"apiProvider":"Other","apiUrl":"https://a.b","defaultModel":"m","verificationMode":"{mode}"}}"#
            );
            assert_eq!(
                config_ok(&config)
                    .verification_mode
                    .map(VerificationMode::as_str),
                Some(mode)
            );
        }
    }

    // ---- C9, C10 --------------------------------------------------------------------------

    #[test]
    fn c9_openai_gains_default_model_at_the_end() {
        let cfg = config_ok(
            r#"{"apiProvider":"OpenAI","temperature":"0.50","apiUrl":"https://api.openai.com/v1/chat/completions","contextWindowLength":" 1e3 "}"#,
        );
        assert_eq!(cfg.default_model.as_deref(), Some(DEFAULT_MODEL));
        assert_eq!(
            Value::Object(cfg.normalized).to_json(),
            r#"{"apiProvider":"OpenAI","temperature":0.50,"apiUrl":"https://api.openai.com/v1/chat/completions","contextWindowLength":1e3,"defaultModel":"gpt-4.1"}"#
        );
        let cfg = config_ok(
            r#"{"apiProvider":"OpenAI","defaultModel":"gpt-4o","apiUrl":"https://api.openai.com/v1/chat/completions"}"#,
        );
        assert_eq!(
            Value::Object(cfg.normalized).to_json(),
            r#"{"apiProvider":"OpenAI","defaultModel":"gpt-4o","apiUrl":"https://api.openai.com/v1/chat/completions"}"#
        );
    }

    #[test]
    fn c9_nothing_else_is_added() {
        for config in [
            OTHER,
            r#"{"apiProvider":"Azure OpenAI","apiUrl":"https://r.openai.azure.com/x"}"#,
            r#"{"apiProvider":"Other","apiUrl":"https://a.b","defaultModel":"m","enableNativeFunctionCalling":false,"contextWindowLength":12345678901234567890}"#,
        ] {
            let cfg = config_ok(config);
            assert_eq!(Value::Object(cfg.normalized).to_json(), config);
            assert_eq!(
                cfg.verification_mode, None,
                "absent verificationMode stays absent"
            );
        }
    }

    #[test]
    fn c4_c10_numeric_strings_and_bad_numbers() {
        for bad in [r#"".5""#, r#""0x10""#, r#""""#, "true", "{}"] {
            let config =
                format!(r#"{{"apiProvider":"OpenAI","apiUrl":"https://a.b","temperature":{bad}}}"#);
            let problems = config_problems(&config);
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0].starts_with("[temperature]: expected value of type [number] but got ["),
                "{problems:?}"
            );
        }
        let cfg = config_ok(
            r#"{"apiProvider":"Other","apiUrl":"https://a.b","defaultModel":"m","temperature":"-2","contextWindowLength":4096,"enableNativeFunctionCalling":true}"#,
        );
        assert_eq!(
            cfg.normalized.get("temperature"),
            Some(&Value::Number(crate::json::Number::parse("-2").unwrap()))
        );
        assert_eq!(
            cfg.normalized.get("enableNativeFunctionCalling"),
            Some(&Value::Bool(true))
        );
    }

    // ---- C11, C12 -------------------------------------------------------------------------

    fn url_problems(url: &str, allowed: &[&str]) -> Vec<String> {
        let config = Value::Object(
            [
                ("apiProvider".to_owned(), Value::from("Azure OpenAI")),
                ("apiUrl".to_owned(), Value::from(url)),
            ]
            .into_iter()
            .collect(),
        );
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        validate_config(&config, &allowed).err().unwrap_or_default()
    }

    #[test]
    fn c11_url_checks_in_order() {
        let e = "Error configuring OpenAI action: Error: ";
        for (url, expected) in [
            (
                "example.com/do-something",
                format!("{e}URL Error: Invalid URL: example.com/do-something"),
            ),
            ("", format!("{e}URL Error: Invalid URL: ")),
            ("http://", format!("{e}URL Error: Invalid URL: http://")),
            (
                "https://exa mple.com/",
                format!("{e}URL Error: Invalid URL: https://exa mple.com/"),
            ),
            (
                "file:///tmp/x",
                format!("{e}URL Error: URL must contain hostname"),
            ),
            (
                "mailto:someone@example.com",
                format!("{e}URL Error: URL must contain hostname"),
            ),
            ("ftp://h/x", format!("{e}URL Error: Invalid protocol")),
            ("ws://h/x", format!("{e}URL Error: Invalid protocol")),
            // Not allowed by the list: the host check is last.
            (
                "https://other.example/x",
                format!(
                    "{e}error validating url: target url \"https://other.example/x\" is not added to the Kibana config xpack.actions.allowedHosts"
                ),
            ),
        ] {
            assert_eq!(
                url_problems(url, &["api.example.com"]),
                vec![expected],
                "{url}"
            );
        }
        // ftp to a host that is not allowed: only the protocol is reported.
        assert_eq!(
            url_problems("ftp://other/x", &["api.example.com"]),
            vec![format!("{e}URL Error: Invalid protocol")]
        );
    }

    #[test]
    fn c12_allowed_hosts_match_whatwg_host_names() {
        let allowed = |url: &str, hosts: &[&str]| url_problems(url, hosts).is_empty();
        assert!(
            allowed("https://API.Example.COM:8443/v1", &["api.example.com"]),
            "case and port"
        );
        assert!(
            allowed("https://api.example.com/v1", &["API.EXAMPLE.COM"]),
            "entry case"
        );
        assert!(
            allowed("http://[::1]:8080/v1", &["[::1]"]),
            "IPv6 in brackets"
        );
        assert!(!allowed("http://[::1]:8080/v1", &["::1"]));
        assert!(
            allowed("https://bücher.example/v1", &["xn--bcher-kva.example"]),
            "punycode"
        );
        assert!(allowed("http://127.0.0.1:1234/v1", &["127.0.0.1"]));
        assert!(allowed("https://anything.at.all/", &["x", "*"]));
        assert!(!allowed(
            "https://api.example.com.evil/",
            &["api.example.com"]
        ));
        assert!(!allowed(
            "https://sub.api.example.com/",
            &["api.example.com"]
        ));
        assert!(!allowed("https://api.example.com/", &[]));

        assert!(host_is_allowed(
            "https://A.example/",
            &["a.example".to_owned()]
        ));
        assert!(host_is_allowed("not a url", &["*".to_owned()]));
        assert!(!host_is_allowed("not a url", &["not a url".to_owned()]));
        assert_eq!(
            url_host_name("https://API.Example.com:9/x").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(url_host_name("http://[::1]:1/").as_deref(), Some("[::1]"));
        assert_eq!(
            url_host_name("https://bücher.example/").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(url_host_name("file:///tmp/x"), None);
        assert_eq!(url_host_name("relative/path"), None);
    }

    // C12 with C67 (amended): host names are compared without one trailing dot, on both sides.
    #[test]
    fn c12_c67_allowed_hosts_ignore_one_trailing_dot() {
        let allowed = |url: &str, hosts: &[&str]| url_problems(url, hosts).is_empty();
        assert!(allowed("http://localhost./v1", &["localhost"]));
        assert!(allowed("http://LocalHost.:8080/v1", &["localhost"]));
        assert!(allowed("http://localhost/v1", &["localhost."]));
        assert!(allowed(
            "https://api.example.com./v1",
            &["API.example.com."]
        ));
        // Only one dot: `localhost..` has an empty label and is another name.
        assert!(!allowed("http://localhost../v1", &["localhost"]));
        assert!(!allowed("http://localhost/v1", &["localhost.."]));
        // A lone dot is the empty name, which matches nothing, not even itself.
        assert!(!allowed("http://./v1", &["."]));
        assert!(!allowed("http://./v1", &[""]));
        assert!(!allowed("http://../v1", &["."]));
        assert!(host_is_allowed(
            "https://a.example./x",
            &["a.example".to_owned()]
        ));
        assert_eq!(comparable_host("localhost."), "localhost");
        assert_eq!(comparable_host("localhost.."), "localhost.");
        assert_eq!(comparable_host("."), "");
        assert!(same_host("x.localhost.", "X.LOCALHOST"));
        assert!(!same_host(".", "."));
        assert!(!same_host("", ""));
    }

    // ---- C13, C14 -------------------------------------------------------------------------

    #[test]
    fn c13_header_names_must_be_tokens() {
        assert!(is_header_name("X-Custom_1.a!#$%&'*+^`|~"));
        for bad in ["", "X Trace", "X:Trace", "X\"", "Ä", "(x)", "a/b", "a\nb"] {
            assert!(!is_header_name(bad), "{bad:?}");
        }
        assert_eq!(
            config_problems(
                r#"{"apiProvider":"OpenAI","apiUrl":"https://a.b","headers":{"Good":"1","X Trace":"v","":"v","a\nb":"secret-value"}}"#
            ),
            vec![
                r#"[headers]: invalid header name "X Trace""#,
                r#"[headers]: invalid header name """#,
                r#"[headers]: invalid header name "a\nb""#,
            ]
        );
    }

    #[test]
    fn c14_header_values_without_cr_lf_nul_and_never_shown() {
        let problems = config_problems(
            r#"{"apiProvider":"OpenAI","apiUrl":"https://a.b","headers":{"X-A":"top\r\nsecret","X-B":"top\nsecret","X-C":"top\u0000secret","X-D":"fine","X-E":null}}"#,
        );
        assert_eq!(
            problems,
            vec![
                "[headers.X-A]: header value must not contain CR, LF or NUL",
                "[headers.X-B]: header value must not contain CR, LF or NUL",
                "[headers.X-C]: header value must not contain CR, LF or NUL",
                "[headers.X-E]: expected value of type [string] but got [null]",
            ]
        );
        assert!(problems.iter().all(|p| !p.contains("secret")));
    }

    #[test]
    fn c15_headers_kept_in_input_order_with_duplicates() {
        let cfg = config_ok(
            r#"{"apiProvider":"OpenAI","apiUrl":"https://a.b","headers":{"X-Id":"1","Accept":"a","x-id":"2"}}"#,
        );
        assert_eq!(
            cfg.headers,
            vec![
                ("X-Id".to_owned(), "1".to_owned()),
                ("Accept".to_owned(), "a".to_owned()),
                ("x-id".to_owned(), "2".to_owned()),
            ]
        );
    }

    // ---- C16, C17 -------------------------------------------------------------------------

    #[test]
    fn c17_example_output_exactly() {
        let errors = validate_connector(
            "id",
            "name",
            &json(r#"{"apiProvider":"Azure OpenAI","apiUrl":"ftp://h/x","projectId":"p"}"#),
            &json(KEY),
            &all_hosts(),
        )
        .unwrap_err();
        assert_eq!(
            errors.to_string(),
            "error validating action type config: Unrecognized keys: \"projectId\"\nerror validating action type config: Error configuring OpenAI action: Error: URL Error: Invalid protocol"
        );
        assert_eq!(errors.config.len(), 2);
        assert!(errors.secrets.is_empty());
        assert!(!errors.is_empty());
    }

    #[test]
    fn c17_config_lines_come_before_secrets_lines() {
        assert_eq!(
            lines(r#"{"apiProvider":"OpenAI"}"#, r#"{"bogus":1}"#),
            vec![
                "error validating action type config: [apiUrl]: expected value of type [string] but got [undefined]",
                "error validating action type secrets: Unrecognized keys: \"bogus\"",
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]",
            ]
        );
        assert!(ValidationErrors::default().is_empty());
        assert!(ValidationErrors::default().lines().is_empty());
    }

    #[test]
    fn c16_valid_connector() {
        let c = connector(OPENAI, KEY);
        assert_eq!((c.id.as_str(), c.name.as_str()), ("id", "name"));
        assert_eq!(c.secrets.api_key.as_deref(), Some("sk-0123456789"));
        assert!(!c.pki_mode());
        assert_eq!(c.tls_profile(), None);
    }

    // ---- C18–C23 --------------------------------------------------------------------------

    #[test]
    fn c18_secrets_shape() {
        assert_eq!(
            lines(OPENAI, "[]"),
            vec![
                "error validating action type secrets: expected value of type [object] but got [Array]"
            ]
        );
        assert_eq!(
            lines(OPENAI, r#"{"zeta":"x","apiKey":5,"alpha":null}"#),
            vec![
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [number]",
                "error validating action type secrets: Unrecognized keys: \"zeta\", \"alpha\"",
            ]
        );
        assert_eq!(
            lines(OTHER, r#"{"apiKey":"k","caData":null}"#),
            vec![
                "error validating action type secrets: [caData]: expected value of type [string] but got [null]"
            ]
        );
    }

    #[test]
    fn c19_empty_values() {
        let (cert, key) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            lines(OTHER, r#"{"apiKey":"k","caData":""}"#),
            vec![
                "error validating action type secrets: [caData]: value has length [0] but it must have a minimum length of [1]."
            ]
        );
        // An empty certificate next to a key: reported once (not again as C23).
        assert_eq!(
            lines(
                OTHER,
                &format!(r#"{{"certificateData":"","privateKeyData":"{key}"}}"#)
            ),
            vec![
                "error validating action type secrets: [certificateData]: value has length [0] but it must have a minimum length of [1]."
            ]
        );
        // Empty apiKey next to PKI data.
        assert_eq!(
            lines(
                OTHER,
                &format!(r#"{{"apiKey":"","certificateData":"{cert}","privateKeyData":"{key}"}}"#)
            ),
            vec![
                "error validating action type secrets: [apiKey]: value has length [0] but it must have a minimum length of [1]."
            ]
        );
        // Empty apiKey without PKI data: C22.
        assert_eq!(
            lines(OPENAI, r#"{"apiKey":""}"#),
            vec![
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]"
            ]
        );
        // Empty PKI fields alone are not PKI mode: the key is still required.
        assert_eq!(
            lines(OTHER, r#"{"certificateData":"","privateKeyData":""}"#),
            vec![
                "error validating action type secrets: [certificateData]: value has length [0] but it must have a minimum length of [1].",
                "error validating action type secrets: [privateKeyData]: value has length [0] but it must have a minimum length of [1].",
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]",
            ]
        );
    }

    #[test]
    fn c20_pki_only_for_other() {
        let (cert, key) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        let azure = r#"{"apiProvider":"Azure OpenAI","apiUrl":"https://r.openai.azure.com/x"}"#;
        for config in [OPENAI, azure] {
            for secrets in [
                format!(r#"{{"apiKey":"k","certificateData":"{cert}","privateKeyData":"{key}"}}"#),
                r#"{"apiKey":"k","caData":"not base64 !"}"#.to_owned(),
                r#"{"privateKeyData":"x"}"#.to_owned(),
            ] {
                assert_eq!(
                    lines(config, &secrets),
                    vec![
                        "error validating action type secrets: PKI authentication is only supported for the Other provider"
                    ],
                    "{config} {secrets}"
                );
            }
        }
        // Skipped when the provider is invalid; the PKI checks then run as usual.
        assert_eq!(
            lines(
                r#"{"apiProvider":"Nope"}"#,
                r#"{"apiKey":"k","caData":"QUJD"}"#
            ),
            vec![
                "error validating action type config: Error configuring OpenAI action: Error: API Provider is not supported: Nope",
                "error validating action type secrets: Invalid CA certificate data file format: The file must be a PEM-encoded certificate beginning with \"-----BEGIN CERTIFICATE-----\".",
            ]
        );
    }

    #[test]
    fn c21_pki_mode_without_verification_mode() {
        let (cert, key) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = connector(
            OTHER,
            &format!(r#"{{"certificateData":"{cert}","privateKeyData":"{key}"}}"#),
        );
        assert!(c.pki_mode());
        assert_eq!(
            c.secrets.api_key, None,
            "apiKey is optional in PKI mode (C23)"
        );
        let profile = c.tls_profile().unwrap();
        assert_eq!(profile.verification, VerificationMode::Full);
        let identity = profile.identity.unwrap();
        assert_eq!(identity.chain_der.len(), 1);
        assert_eq!(identity.key_format, KeyFormat::Pkcs8);
    }

    #[test]
    fn c22_key_mode() {
        assert_eq!(
            lines(OTHER, "{}"),
            vec![
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]"
            ]
        );
        let root = pki_test::ca("root");
        let ca = pki_test::b64(&root.pem);
        // caData alone with Other is valid, but the key is still required.
        let c = connector(OTHER, &format!(r#"{{"apiKey":"k","caData":"{ca}"}}"#));
        assert!(!c.pki_mode());
        assert_eq!(c.secrets.ca_der.len(), 1);
        let profile = c.tls_profile().unwrap();
        assert_eq!(profile.identity, None);
        assert_eq!(profile.ca_der, c.secrets.ca_der);
        assert_eq!(
            lines(OTHER, &format!(r#"{{"caData":"{ca}"}}"#)),
            vec![
                "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]"
            ]
        );
    }

    #[test]
    fn c23_pki_mode_needs_both() {
        let (cert, key) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            lines(OTHER, &format!(r#"{{"privateKeyData":"{key}"}}"#)),
            vec!["error validating action type secrets: Certificate data must be provided for PKI"]
        );
        assert_eq!(
            lines(
                OTHER,
                &format!(r#"{{"apiKey":"k","certificateData":"{cert}"}}"#)
            ),
            vec!["error validating action type secrets: Private key data must be provided for PKI"]
        );
    }

    // ---- C24–C31 through the connector ----------------------------------------------------

    #[test]
    fn c31_every_failing_check_in_order() {
        let encrypted = pki_test::b64(pki_test::RSA_PKCS8_ENCRYPTED);
        let raw_pem = pki_test::identity(&rcgen::PKCS_ECDSA_P256_SHA256)
            .0
            .replace('\n', "\\n");
        let secrets = format!(
            r#"{{"caData":"QUJD","privateKeyData":"{encrypted}","certificateData":"{raw_pem}","extra":1}}"#
        );
        assert_eq!(
            lines(OTHER, &secrets),
            vec![
                "error validating action type secrets: Unrecognized keys: \"extra\"",
                "error validating action type secrets: Certificate data is not valid base64 (PKI fields must be base64-encoded PEM)",
                "error validating action type secrets: Private key data is encrypted; encrypted private keys are not supported",
                "error validating action type secrets: Invalid CA certificate data file format: The file must be a PEM-encoded certificate beginning with \"-----BEGIN CERTIFICATE-----\".",
            ]
        );
        // C23 comes first; CA still checked.
        let bad_cert = pki_test::b64("-----BEGIN CERTIFICATE-----QUJD-----END CERTIFICATE-----");
        assert_eq!(
            lines(
                OTHER,
                &format!(r#"{{"certificateData":"{bad_cert}","caData":"%"}}"#)
            ),
            vec![
                "error validating action type secrets: Private key data must be provided for PKI",
                "error validating action type secrets: Invalid Certificate data: the PEM block could not be parsed as an X.509 certificate",
                "error validating action type secrets: CA certificate data is not valid base64 (PKI fields must be base64-encoded PEM)",
            ]
        );
        // Key problems of the other two kinds.
        let (cert, _) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        for (key_text, message) in [
            (
                pki_test::b64("no key here"),
                "Invalid Private key data file format: The file must be a PEM-encoded private key beginning with \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\".",
            ),
            (
                pki_test::b64(pki_test::K256_SEC1),
                "Invalid Private key data: the PEM block could not be parsed as a supported private key",
            ),
        ] {
            assert_eq!(
                lines(
                    OTHER,
                    &format!(r#"{{"certificateData":"{cert}","privateKeyData":"{key_text}"}}"#)
                ),
                vec![format!("error validating action type secrets: {message}")]
            );
        }
    }

    #[test]
    fn c29_mismatch_reported_only_when_both_parse() {
        let (cert, _) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = pki_b64(&rcgen::PKCS_ECDSA_P256_SHA256);
        let root = pki_test::ca("root");
        let ca = pki_test::b64(&root.pem);
        assert_eq!(
            lines(
                OTHER,
                &format!(
                    r#"{{"certificateData":"{cert}","privateKeyData":"{other_key}","caData":"{ca}"}}"#
                )
            ),
            vec![
                "error validating action type secrets: Private key data does not match the certificate data"
            ]
        );
        // CA failing does not hide the mismatch; it comes before it (C31).
        assert_eq!(
            lines(
                OTHER,
                &format!(
                    r#"{{"certificateData":"{cert}","privateKeyData":"{other_key}","caData":"@"}}"#
                )
            ),
            vec![
                "error validating action type secrets: CA certificate data is not valid base64 (PKI fields must be base64-encoded PEM)",
                "error validating action type secrets: Private key data does not match the certificate data",
            ]
        );
    }

    #[test]
    fn c26_c27_chain_and_bundle_reach_the_profile() {
        let root = pki_test::ca("root");
        let mid = pki_test::intermediate("mid", &root);
        let leaf_key = pki_test::key(&rcgen::PKCS_ECDSA_P384_SHA384);
        let leaf = pki_test::signed(&leaf_key, "client", &mid, false);
        let other_root = pki_test::ca("other root");
        let secrets = format!(
            r#"{{"certificateData":"{}","privateKeyData":"{}","caData":"{}"}}"#,
            pki_test::b64(format!("{leaf}{}", mid.pem)),
            pki_test::b64(pki_test::pkcs8_to_sec1(&leaf_key.serialize_pem())),
            pki_test::b64(format!("{}{}", root.pem, other_root.pem)),
        );
        let config = r#"{"apiProvider":"Other","apiUrl":"https://llm.local/v1","defaultModel":"m","verificationMode":"none"}"#;
        let profile = connector(config, &secrets).tls_profile().unwrap();
        assert_eq!(profile.verification, VerificationMode::None);
        let identity = profile.identity.as_ref().unwrap();
        assert_eq!(
            identity.chain_der,
            vec![pki_test::der_of(&leaf), pki_test::der_of(&mid.pem)]
        );
        assert_eq!(identity.key_format, KeyFormat::Sec1);
        assert_eq!(
            profile.ca_der,
            vec![
                pki_test::der_of(&root.pem),
                pki_test::der_of(&other_root.pem)
            ]
        );
    }

    #[test]
    fn c28_rsa_pkcs1_and_collapsed_identity_through_the_connector() {
        let rsa = rcgen::KeyPair::from_pem(pki_test::RSA_PKCS8).unwrap();
        let cert = pki_test::self_signed(&rsa, "rsa client");
        let collapse = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        let secrets = format!(
            r#"{{"certificateData":"{}","privateKeyData":"{}"}}"#,
            pki_test::b64(collapse(&cert)),
            pki_test::b64(collapse(pki_test::RSA_PKCS1)),
        );
        let c = connector(OTHER, &secrets);
        let identity = c.secrets.identity.as_ref().unwrap();
        assert_eq!(identity.key_format, KeyFormat::Pkcs1);
        assert_eq!(identity.key_der, pki_test::der_of(pki_test::RSA_PKCS1));
    }

    // ---- C122 -----------------------------------------------------------------------------

    #[test]
    fn c122_tls_profile_only_for_other_https_with_pki_or_ca() {
        let (cert, key) = pki_b64(&rcgen::PKCS_ED25519);
        let pki = format!(r#"{{"certificateData":"{cert}","privateKeyData":"{key}"}}"#);
        let http = r#"{"apiProvider":"Other","apiUrl":"http://llm.local/v1","defaultModel":"m","verificationMode":"certificate"}"#;
        let c = connector(http, &pki);
        assert!(c.pki_mode(), "accepted with http");
        assert_eq!(c.tls_profile(), None, "and unused");
        let https = http.replace("http:", "https:");
        let profile = connector(&https, &pki).tls_profile().unwrap();
        assert_eq!(profile.verification, VerificationMode::Certificate);
        assert!(profile.identity.is_some());
        assert!(profile.ca_der.is_empty());
        assert_eq!(
            connector(&https, KEY).tls_profile(),
            None,
            "key mode without caData"
        );
        assert_eq!(connector(OPENAI, KEY).tls_profile(), None);
    }

    // ---- C32 ------------------------------------------------------------------------------

    #[test]
    fn c32_no_secret_in_debug_output() {
        let root = pki_test::ca("root");
        let (cert_pem, key_pem) = pki_test::identity(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key_b64 = pki_test::b64(&key_pem);
        let secrets = format!(
            r#"{{"apiKey":"sk-very-secret-key","certificateData":"{}","privateKeyData":"{key_b64}","caData":"{}"}}"#,
            pki_test::b64(&cert_pem),
            pki_test::b64(&root.pem),
        );
        let config = r#"{"apiProvider":"Other","apiUrl":"https://llm.local/v1","defaultModel":"m","headers":{"X-Api-Key":"header-secret-value"}}"#;
        let c = connector(config, &secrets);
        let key_der = &c.secrets.identity.as_ref().unwrap().key_der;
        let forbidden: Vec<String> = vec![
            "sk-very-secret-key".to_owned(),
            "header-secret-value".to_owned(),
            key_b64.clone(),
            pki_test::b64(key_der),
            format!("{:?}", &key_der[..8]),
            format!("{}", key_der[key_der.len() - 1]),
        ];
        let debug = [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.secrets),
            format!("{:?}", c.config),
            format!("{:?}", c.tls_profile().unwrap()),
        ];
        for text in &debug {
            for secret in &forbidden[..4] {
                assert!(!text.contains(secret.as_str()), "{text}");
            }
            assert!(!text.contains(&forbidden[4]), "{text}");
        }
        assert!(debug[0].contains("[REDACTED]"));
        assert!(debug[3].contains("X-Api-Key"));
    }

    #[test]
    fn c32_no_secret_in_any_message() {
        let api_key = "sk-abcdefgh12345";
        // The key pasted into config fields by mistake is redacted in config messages.
        let config = format!(
            r#"{{"apiProvider":"Other","apiUrl":"{api_key}","defaultModel":"m","verificationMode":"{api_key}","{api_key}":1,"headers":{{"{api_key}!":"x","X":"{api_key}\n"}}}}"#
        );
        let errors = validate_connector(
            "id",
            "name",
            &json(&config),
            &json(&format!(r#"{{"apiKey":"{api_key}"}}"#)),
            &all_hosts(),
        )
        .unwrap_err();
        let text = errors.to_string();
        assert!(!text.contains(api_key), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        assert_eq!(errors.config.len(), 4, "{text}");

        // PKI values never appear in their own messages, whatever is wrong with them.
        let (_, key_pem) = pki_test::identity(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key_b64 = pki_test::b64(&key_pem);
        let url_safe = key_b64.replace('+', "-").replace('/', "_");
        for secrets in [
            format!(
                r#"{{"apiKey":"{api_key}","certificateData":"{key_b64}","privateKeyData":"{key_b64}","caData":"{key_b64}"}}"#
            ),
            format!(
                r#"{{"apiKey":"{api_key}","certificateData":"{url_safe}","privateKeyData":"{url_safe}x"}}"#
            ),
            format!(
                r#"{{"apiKey":"{api_key}","privateKeyData":{}}}"#,
                crate::json::quote(&key_pem)
            ),
        ] {
            let errors =
                validate_connector("id", "name", &json(OTHER), &json(&secrets), &all_hosts())
                    .unwrap_err();
            let text = format!("{errors}\n{errors:?}");
            assert!(!text.is_empty());
            for secret in [
                api_key,
                key_b64.as_str(),
                url_safe.as_str(),
                &key_pem[28..60],
            ] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn c32_short_secrets_are_not_redacted() {
        assert_eq!(
            redact_secrets(
                "a short key".to_owned(),
                &secret_strings(&json(r#"{"apiKey":"short"}"#))
            ),
            "a short key"
        );
        assert_eq!(
            redact_secrets(
                "x sk-12345678 y".to_owned(),
                &secret_strings(&json(r#"{"apiKey":"sk-12345678"}"#))
            ),
            "x [REDACTED] y"
        );
    }

    use crate::pki::test_support as pki_test;

    /// A matching certificate and key for `alg`, base64-encoded as the secrets hold them.
    fn pki_b64(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let (cert, key) = pki_test::identity(alg);
        (pki_test::b64(cert), pki_test::b64(key))
    }
}
