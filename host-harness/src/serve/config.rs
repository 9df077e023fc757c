//! What `serve` reads from its files and reads again on `SIGHUP` (cli.md "Reload"): the
//! connectors, the routes and the client tokens, validated together.
//!
//! A [`Config`] is read whole or not at all: the first invalid connector, route or token entry
//! refuses the set with the same messages as at start. Requests take the configuration in force
//! when they arrive (an `Arc`), and finish on it whatever a reload does meanwhile.

use super::auth::Auth;
use super::catalog::Catalog;
use super::gateway::ServeOptions;
use super::route_table::RouteTable;
use crate::executor::Executor;
use anyhow::Result;
use openai_connector::redaction::Secrets;

/// The connectors, routes and tokens in force.
pub(super) struct Config {
    /// `--connectors`, each validated once.
    pub(super) catalog: Catalog,
    /// `--routes`.
    pub(super) routes: RouteTable,
    /// The admin token and `--client-tokens`.
    pub(super) auth: Auth,
}

impl Config {
    /// Reads and validates the files `options` name; every token goes to `tokens` (for
    /// redaction, C121a), never into a message.
    pub(super) async fn load(
        options: &ServeOptions,
        executor: &Executor,
        tokens: &mut Secrets,
    ) -> Result<Config> {
        let catalog = Catalog::load(&options.connectors, executor).await?;
        let routes = match &options.routes {
            Some(path) => RouteTable::load(path, &catalog.ids()).map_err(anyhow::Error::msg)?,
            None => RouteTable::default(),
        };
        let mut auth = Auth::new(options.admin_token.as_deref());
        if let Some(admin) = &options.admin_token {
            tokens.add(admin);
        }
        if let Some(path) = &options.client_tokens {
            // A grant names connectors or routes.
            let mut grantable = catalog.ids();
            grantable.extend(routes.names().map(str::to_owned));
            auth = auth.with_client_tokens_file(path, &grantable, tokens)?;
        }
        Ok(Config {
            catalog,
            routes,
            auth,
        })
    }

    /// One line for the log: what is served.
    pub(super) fn summary(&self) -> String {
        format!(
            "{} connector(s), {} route(s), {} client token(s)",
            self.catalog.iter().count(),
            self.routes.names().count(),
            self.auth.client_count()
        )
    }
}
