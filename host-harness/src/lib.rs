//! A wasmtime host for the OpenAI connector component, and the `openai-connector` CLI.
//!
//! The component validates connectors, builds requests and maps responses; this crate gives it
//! outbound HTTP(S) through wasi-http and owns the transport policy: allowed hosts, TLS roots,
//! client certificates and verification modes, timeouts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use openai_connector_harness::{CodeCache, ConnectorFile, Executor, Settings};
//! let executor = Executor::new(openai_connector_harness::Harness::embedded(CodeCache::Default)?, Settings::default());
//! let connector = ConnectorFile::load("my-openai.json".as_ref())?;
//! let outcome = executor.execute(&connector, r#"{"subAction":"test","subActionParams":{"body":"{}"}}"#).await?;
//! # Ok(()) }
//! ```

pub mod connector_file;
pub mod event_log;
pub mod outbound;
pub mod output;
pub mod runtime;
pub mod settings;
pub mod tls;
pub mod tokenizer;

pub use connector_file::ConnectorFile;
pub use outbound::OutboundPolicy;
pub use runtime::{CodeCache, Harness, wit};
pub use settings::Settings;

use anyhow::Result;
use std::sync::Arc;
use tls::TlsProfile;

/// The outcome of `execute` for a valid connector.
#[derive(Debug)]
pub enum ExecuteOutcome {
    /// The connector is invalid: one line per problem, prefixed as `validate` prints them.
    /// Nothing was sent (C16).
    InvalidConnector(Vec<String>),
    /// The execution ran (successfully or not).
    Executed(wit::Execution),
}

/// Runs connectors through the component under one set of deployment settings.
#[derive(Clone)]
pub struct Executor {
    harness: Harness,
    settings: Settings,
}

impl Executor {
    /// An executor for `harness` under `settings`.
    pub fn new(harness: Harness, settings: Settings) -> Self {
        Executor { harness, settings }
    }

    /// The deployment settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the component needs of the settings.
    pub fn deployment(&self) -> wit::DeploymentSettings {
        wit::DeploymentSettings {
            allowed_hosts: self.settings.allowed_hosts.clone(),
            response_timeout_ms: self.settings.response_timeout_ms(),
            max_response_content_length: self.settings.max_response_content_length,
        }
    }

    /// Validates a connector in a fresh instance.
    pub async fn validate(
        &self,
        connector: &ConnectorFile,
    ) -> Result<Result<wit::ValidatedConnector, Vec<String>>> {
        let mut instance = self
            .harness
            .instantiate(Arc::new(OutboundPolicy::deny_all()))
            .await?;
        let result = instance
            .validate(&definition(connector), &self.deployment())
            .await?;
        Ok(result.map_err(|e| validation_lines(&e)))
    }

    /// Runs one non-streaming sub-action: validate, then execute with the connector's TLS
    /// profile applied to the transport.
    pub async fn execute(
        &self,
        connector: &ConnectorFile,
        params_json: &str,
    ) -> Result<ExecuteOutcome> {
        let definition = definition(connector);
        let deployment = self.deployment();
        let mut instance = self
            .harness
            .instantiate(Arc::new(OutboundPolicy::deny_all()))
            .await?;
        let validated = match instance.validate(&definition, &deployment).await? {
            Ok(v) => v,
            Err(e) => return Ok(ExecuteOutcome::InvalidConnector(validation_lines(&e))),
        };
        instance.set_policy(Arc::new(OutboundPolicy::for_connector(
            &self.settings,
            validated.tls.map(TlsProfile::from),
        )));
        match instance
            .execute(&definition, &deployment, params_json)
            .await?
        {
            Ok(execution) => Ok(ExecuteOutcome::Executed(execution)),
            Err(e) => Ok(ExecuteOutcome::InvalidConnector(validation_lines(&e))),
        }
    }
}

/// The WIT definition of a loaded connector file.
pub fn definition(connector: &ConnectorFile) -> wit::ConnectorDefinition {
    wit::ConnectorDefinition {
        id: connector.id.clone(),
        name: connector.name.clone(),
        config_json: connector.config_json.clone(),
        secrets_json: connector.secrets_json.clone(),
    }
}

/// Validation problems as `validate` prints them, config first (C17).
pub fn validation_lines(errors: &wit::ValidationErrors) -> Vec<String> {
    errors
        .config
        .iter()
        .map(|p| format!("error validating action type config: {p}"))
        .chain(
            errors
                .secrets
                .iter()
                .map(|p| format!("error validating action type secrets: {p}")),
        )
        .collect()
}
