//! `openai-connector`: validate and execute Kibana OpenAI connectors through the WebAssembly
//! component (interface: `shared/spec/cli.md`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use openai_connector_harness::{
    CodeCache, ConnectorFile, ExecuteOutcome, Executor, Harness, Settings, output,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod demo;

/// Kibana's OpenAI connector as a WebAssembly component, run from the command line.
#[derive(Parser)]
#[command(name = "openai-connector", version, about, long_about = None)]
struct Cli {
    /// Load this component instead of the one built into the binary.
    #[arg(long, global = true, value_name = "FILE")]
    component: Option<PathBuf>,
    /// Compile the component every time instead of using the compiled-code cache.
    #[arg(long, global = true)]
    no_code_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a connector file; print it as Kibana's get-connector API would.
    Validate {
        /// Connector file (Kibana's create-connector body).
        connector: PathBuf,
        /// Deployment settings (Kibana's `xpack.actions.*` keys).
        #[arg(long, value_name = "SETTINGS.json")]
        settings: Option<PathBuf>,
    },
    /// Run one sub-action through the component; print Kibana's `_execute` response.
    Execute {
        /// Connector file (Kibana's create-connector body).
        connector: PathBuf,
        /// Params (`{"subAction": ..., "subActionParams": ...}`); `-` reads standard input.
        #[arg(long, value_name = "PARAMS")]
        params: PathBuf,
        /// Deployment settings (Kibana's `xpack.actions.*` keys).
        #[arg(long, value_name = "SETTINGS.json")]
        settings: Option<PathBuf>,
    },
    /// Run `test` and `run` for each provider against a built-in loopback demo upstream and
    /// show what was sent and received.
    Demo,
}

/// A failure that ends the command with exit code 2 (unusable input or environment).
struct Fatal(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.into())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPENAI_CONNECTOR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openai-connector: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(e)) => {
            eprintln!("openai-connector: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_harness(cli: &Cli) -> Result<Harness> {
    let cache = if cli.no_code_cache {
        CodeCache::Disabled
    } else {
        CodeCache::Default
    };
    match &cli.component {
        Some(path) => Harness::from_file(path, cache),
        None => Harness::embedded(cache),
    }
}

fn load_settings(path: Option<&Path>) -> Result<Settings> {
    let settings = match path {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    if settings.proxy_url.is_some() {
        anyhow::bail!(
            "{}: proxyUrl is not supported by this version of openai-connector; requests would bypass the proxy, so none are made",
            path.map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(settings)
}

fn read_params(path: &Path) -> Result<String> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read params from standard input")?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the params file", path.display()))?;
        (path.display().to_string(), text)
    };
    // Malformed JSON is a broken file, not a params problem: report where it breaks.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        anyhow::bail!(
            "{name}: invalid params JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        );
    }
    Ok(text)
}

async fn run(cli: Cli) -> Result<u8, Fatal> {
    match &cli.command {
        Command::Validate {
            connector,
            settings,
        } => {
            let settings = load_settings(settings.as_deref())?;
            let connector = ConnectorFile::load(connector)?;
            let executor = Executor::new(load_harness(&cli)?, settings);
            match executor.validate(&connector).await? {
                Ok(valid) => {
                    println!("{}", valid.connector_json);
                    Ok(0)
                }
                Err(lines) => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                    Ok(1)
                }
            }
        }
        Command::Execute {
            connector,
            params,
            settings,
        } => {
            let settings = load_settings(settings.as_deref())?;
            let connector = ConnectorFile::load(connector)?;
            let params = read_params(params)?;
            let executor = Executor::new(load_harness(&cli)?, settings);
            match executor.execute(&connector, &params).await? {
                ExecuteOutcome::InvalidConnector(lines) => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                    Ok(2)
                }
                ExecuteOutcome::Executed(execution) => {
                    let (json, code) = output::execution_json(&connector.id, &execution)?;
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "{json}")?;
                    stdout.flush()?;
                    Ok(code as u8)
                }
            }
        }
        Command::Demo => {
            let executor = Executor::new(load_harness(&cli)?, Settings::default());
            demo::run(&executor).await?;
            Ok(0)
        }
    }
}
