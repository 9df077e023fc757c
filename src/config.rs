//! Connector config and secrets: the Kibana JSON, validated (contract sections 1 and 2).

use crate::json::Object;
use std::fmt;

/// Kibana's connector type id.
pub const CONNECTOR_TYPE_ID: &str = ".gen-ai";
/// The connector type's display name (C34).
pub const CONNECTOR_TYPE_NAME: &str = "OpenAI";
/// Model used for OpenAI when the config names none (C9).
pub const DEFAULT_MODEL: &str = "gpt-4.1";
/// OpenAI's chat completions URL (C54).
pub const OPENAI_CHAT_URL: &str = "https://api.openai.com/v1/chat/completions";
/// OpenAI's legacy completions URL (C54).
pub const OPENAI_LEGACY_COMPLETION_URL: &str = "https://api.openai.com/v1/completions";

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
    pub const NAMES: [&'static str; 3] = ["full", "certificate", "none"];

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

/// A validated `config` object (section 1).
#[derive(Clone, Debug, PartialEq)]
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

/// A client identity for PKI mode (C21, C26, C28): DER certificates, leaf first, and the key.
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

/// The encoding of a private key (C28, D4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
    /// `RSA PRIVATE KEY` (PKCS#1).
    Pkcs1,
    /// `EC PRIVATE KEY` (SEC1).
    Sec1,
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
