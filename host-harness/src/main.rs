//! `openai-connector`: validate and execute Kibana OpenAI connectors through the WebAssembly
//! component (interface: `shared/spec/cli.md`).
#![expect(clippy::print_stdout, reason = "the CLI's results go to stdout")]
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use openai_connector_harness::event_log::EventLog;
use openai_connector_harness::{
    Cancel, CodeCache, ConnectorFile, Executor, Finished, Harness, Settings, Started, Stream,
    StreamItem, output,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod demo;
mod sse_decode;

/// The environment variable holding the gateway's admin token.
const ADMIN_TOKEN_VAR: &str = "OPENAI_CONNECTOR_ADMIN_TOKEN";
/// The shortest admin token `serve` accepts: it guards every connector and the usage data.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

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
        /// Params (`{"subAction": ..., "subActionParams": ...}`): Kibana's sub-actions, or this
        /// project's `responses` and `embeddings` (`{"body": "<JSON text>"}`); `-` reads
        /// standard input.
        #[arg(long, value_name = "PARAMS")]
        params: PathBuf,
        /// Deployment settings (Kibana's `xpack.actions.*` keys).
        #[arg(long, value_name = "SETTINGS.json")]
        settings: Option<PathBuf>,
        /// Append one JSON line per execution to this file (Kibana's event-log fields).
        #[arg(long, value_name = "FILE")]
        event_log: Option<PathBuf>,
    },
    /// Server-sent events tools.
    #[command(subcommand)]
    Sse(SseCommand),
    /// Serve connectors over HTTP: Kibana-compatible connector routes, OpenAI-compatible routes
    /// (chat completions, Responses, embeddings, models), /metrics, /dashboard and /healthz.
    ///
    /// Admin routes need `Authorization: Bearer $OPENAI_CONNECTOR_ADMIN_TOKEN`.
    Serve {
        /// A directory of connector files, or one JSON file holding Kibana's
        /// `xpack.actions.preconfigured` map.
        #[arg(long, value_name = "PATH")]
        connectors: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Deployment settings (Kibana's `xpack.actions.*` keys, plus `guestMemoryLimit` and
        /// `guestTimeLimit` for each execution's sandbox, and serve's limits: `shutdownGrace`,
        /// `headerReadTimeout`, `idleTimeout`, `requestBodyTimeout`, `maxConnections`,
        /// `maxExecutions`, `maxExecutionsPerConnector`, `maxExecutionsPerClient`, `queueTimeout`,
        /// `usageSinkBuffer`; docs/serve.md).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Append one JSON line per execution to this file; the dashboard also reads it at
        /// start.
        #[arg(long, value_name = "FILE")]
        event_log: Option<PathBuf>,
        /// Client tokens for the OpenAI-compatible route:
        /// `{"tokens": [{"token": ..., "connectors": ["<id>" | "*"], "limits": {"requestsPerMinute": N, "tokensPerMinute": N, "concurrentRequests": N}}]}`
        /// (`limits` optional).
        #[arg(long, value_name = "FILE")]
        client_tokens: Option<PathBuf>,
        /// Routes: names that stand for ordered lists of connectors, served at
        /// `POST /routes/{name}/v1/chat/completions`:
        /// `{"routes": {"<name>": {"connectors": ["<id>", ...], "strategy": "fallback" | "balance"}}}`.
        #[arg(long, value_name = "FILE")]
        routes: Option<PathBuf>,
        /// Also send usage here (repeatable): `elasticsearch+http(s)://HOST:PORT/INDEX` (the
        /// event-log documents, `_bulk`; credentials from `OPENAI_CONNECTOR_SINK_AUTH` as
        /// `user:password` or an API key) or `otlp+http(s)://HOST:PORT` (OTLP/HTTP GenAI spans
        /// and metrics). Batched, retried, buffered (`usageSinkBuffer`); docs/serve.md.
        #[arg(long = "usage-sink", value_name = "URL")]
        usage_sinks: Vec<String>,
        /// Where the client limits (`limits` in `--client-tokens`) are counted: in this process
        /// by default, or `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` to share them between
        /// replicas (docs/serve.md "Shared state").
        #[arg(
            long,
            value_name = "URL",
            env = "OPENAI_CONNECTOR_STATE",
            hide_env_values = true
        )]
        state: Option<String>,
        /// Start without `OPENAI_CONNECTOR_ADMIN_TOKEN`: every route is then open (local
        /// experiments only).
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Run `test` and `run` for each provider against a built-in loopback demo upstream and
    /// show what was sent and received.
    Demo,
}

#[derive(Subcommand)]
enum SseCommand {
    /// Decode an SSE byte stream with the component's WHATWG decoder: one JSON line per event.
    Decode {
        /// Input file; standard input when absent.
        file: Option<PathBuf>,
        /// Assemble chat-completion chunks instead: one line per delta, then `{"final": ...}`.
        #[arg(long)]
        chat: bool,
        /// Largest event the decoder holds, in bytes (C91).
        #[arg(long, default_value_t = 1_048_576, value_name = "BYTES")]
        max_event_bytes: u32,
    },
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
                // wasmtime's code cache warns when two processes compile the same component
                // at once and the second loses the race to write it (a benign `File exists`;
                // the winner's copy is identical). A cache problem only ever costs start-up
                // time, so it is not the caller's business unless they ask for it.
                .unwrap_or_else(|_| "warn,wasmtime_internal_cache=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// The component with room for `slots` instances at once (`None`: the default 64).
fn load_harness(cli: &Cli, slots: Option<u32>) -> Result<Harness> {
    let cache = if cli.no_code_cache {
        CodeCache::Disabled
    } else {
        CodeCache::Default
    };
    match slots {
        Some(slots) => Harness::load(cli.component.as_deref(), cache, slots),
        None => match &cli.component {
            Some(path) => Harness::from_file(path, cache),
            None => Harness::embedded(cache),
        },
    }
}

fn load_settings(path: Option<&Path>) -> Result<Settings> {
    // Proxy settings are checked here too (C129): an unusable proxyUrl is a settings error.
    Ok(match path {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    })
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
            let executor = Executor::new(load_harness(&cli, None)?, settings);
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
            event_log,
        } => {
            let settings = load_settings(settings.as_deref())?;
            let connector = ConnectorFile::load(connector)?;
            let params = read_params(params)?;
            let log =
                match event_log {
                    Some(path) => Some(EventLog::open(path).with_context(|| {
                        format!("{}: cannot open the event log", path.display())
                    })?),
                    None => None,
                };
            let executor = Executor::new(load_harness(&cli, None)?, settings);
            // C68: SIGINT (Ctrl-C), SIGTERM (supervisors, `timeout`) and SIGHUP (a closed
            // terminal) abandon the upstream; the execution still ends (and is logged) as a
            // failure with the usage of what arrived. The handlers are in place before the
            // execution starts.
            let cancel = Cancel::new();
            let on_signal = cancel.clone();
            let stop = stop_signals();
            tokio::spawn(async move {
                if let Some(what) = stop.await {
                    eprintln!("openai-connector: {what}; abandoning the upstream");
                    on_signal.cancel();
                }
            });
            let started = std::time::SystemTime::now();
            // Validated once for this run; the execution does not validate again.
            let launched = match executor.prepare(&connector).await {
                Ok(Ok(prepared)) => {
                    executor
                        .start_cancellable(&prepared, &params, cancel.clone())
                        .await
                }
                Ok(Err(lines)) => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                    return Ok(2);
                }
                Err(e) => Err(e),
            };
            let finished = match launched {
                // The guest trapped, or could not be instantiated: a failed execution, which
                // is still logged.
                Err(e) => {
                    let finished = Finished::sandbox_failure(&e, started);
                    if let Err(failure) = &finished.outcome {
                        println!("{}", output::failure_json(&connector.id, failure));
                    }
                    finished
                }
                Ok(Started::Ended(finished)) => {
                    let json = match &finished.outcome {
                        Ok(data) => {
                            output::success_json(&connector.id, data.as_deref().unwrap_or("null"))?
                        }
                        Err(failure) => output::failure_json(&connector.id, failure),
                    };
                    println!("{json}");
                    finished
                }
                Ok(Started::Streaming(stream)) => {
                    stream_to_stdout(&connector, stream, &cancel).await
                }
            };
            if let Some(log) = &log {
                log.append(&finished.record(&connector)).with_context(|| {
                    format!("{}: cannot append to the event log", log.path().display())
                })?;
            }
            Ok(if finished.outcome.is_ok() { 0 } else { 1 })
        }
        Command::Sse(SseCommand::Decode {
            file,
            chat,
            max_event_bytes,
        }) => {
            let harness = load_harness(&cli, None)?;
            sse_decode::run(&harness, file.as_deref(), *chat, *max_event_bytes).await
        }
        Command::Serve {
            connectors,
            listen,
            settings,
            event_log,
            client_tokens,
            routes,
            usage_sinks,
            state,
            insecure_no_auth,
        } => {
            let admin_token = match std::env::var(ADMIN_TOKEN_VAR) {
                Ok(token) if token.trim().chars().count() >= MIN_ADMIN_TOKEN_CHARS => {
                    Some(token.trim().to_owned())
                }
                Ok(token) if token.trim().is_empty() => {
                    return Err(Fatal(anyhow::anyhow!("{ADMIN_TOKEN_VAR} is set but empty")));
                }
                // The token itself is never echoed.
                Ok(_) => {
                    return Err(Fatal(anyhow::anyhow!(
                        "{ADMIN_TOKEN_VAR} is shorter than {MIN_ADMIN_TOKEN_CHARS} characters: use a long random token (for example `openssl rand -hex 24`)"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Fatal(anyhow::anyhow!("{ADMIN_TOKEN_VAR} is not UTF-8")));
                }
                Err(std::env::VarError::NotPresent) if *insecure_no_auth => {
                    tracing::warn!(
                        "--insecure-no-auth: {ADMIN_TOKEN_VAR} is not set, so every route is open to anyone who can connect"
                    );
                    None
                }
                Err(std::env::VarError::NotPresent) => {
                    return Err(Fatal(anyhow::anyhow!(
                        "{ADMIN_TOKEN_VAR} is not set: set it to the admin token, or pass --insecure-no-auth for a local experiment"
                    )));
                }
            };
            let settings = load_settings(settings.as_deref())?;
            // One instance slot per execution `serve` may run at once (`maxExecutions`).
            let slots = settings.max_executions();
            let executor = Executor::new(load_harness(&cli, Some(slots))?, settings);
            let options = openai_connector_harness::serve::ServeOptions {
                connectors: connectors.clone(),
                listen: listen.clone(),
                event_log: event_log.clone(),
                client_tokens: client_tokens.clone(),
                routes: routes.clone(),
                usage_sinks: usage_sinks.clone(),
                state: state.clone(),
                admin_token,
            };
            openai_connector_harness::serve::serve(executor, options, |addr| {
                eprintln!("listening on http://{addr}");
            })
            .await?;
            Ok(0)
        }
        Command::Demo => {
            let executor = Executor::new(load_harness(&cli, None)?, Settings::default());
            demo::run(&executor).await?;
            Ok(0)
        }
    }
}

/// Installs the handlers of the signals that stop `execute` (SIGINT, SIGTERM, SIGHUP) at once;
/// the future resolves with what happened when one arrives (never, if no handler could be
/// installed).
fn stop_signals() -> impl std::future::Future<Output = Option<&'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let install = |kind: SignalKind| {
            signal(kind)
                .inspect_err(|e| {
                    tracing::warn!("cannot handle signal {}: {e}", kind.as_raw_value());
                })
                .ok()
        };
        /// The next delivery of `handler`'s signal, as `what`.
        async fn next(handler: Option<&mut Signal>, what: &'static str) -> Option<&'static str> {
            match handler {
                Some(handler) => handler.recv().await.map(|()| what),
                None => std::future::pending().await,
            }
        }
        let mut interrupt = install(SignalKind::interrupt());
        let mut terminate = install(SignalKind::terminate());
        let mut hangup = install(SignalKind::hangup());
        async move {
            tokio::select! {
                what = next(interrupt.as_mut(), "interrupted") => what,
                what = next(terminate.as_mut(), "terminated") => what,
                what = next(hangup.as_mut(), "hung up") => what,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async { tokio::signal::ctrl_c().await.ok().map(|()| "interrupted") }
    }
}

/// Writes a streaming execution to stdout as it arrives (cli.md "execute"). A failure before
/// the first byte prints the failure JSON; after it, the message goes to stderr. A closed stdout
/// cancels the execution (C68). A guest trap ends the execution as a sandbox failure
/// ([`Stream::end`]); what was written stays written.
async fn stream_to_stdout(
    connector: &ConnectorFile,
    mut stream: Box<Stream>,
    cancel: &Cancel,
) -> Finished {
    let mut stdout = tokio::io::stdout();
    let mut delivered = false;
    let mut reader_gone = false;
    let mut trap = None;
    loop {
        let item = match stream.next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                trap = Some(e);
                break;
            }
        };
        if reader_gone {
            // Drain what the component still returns until the cancellation ends the stream.
            continue;
        }
        let written = match item {
            StreamItem::Bytes(bytes) => write_flush(&mut stdout, &bytes).await,
            StreamItem::Chunk(json) => {
                let mut line = json.into_bytes();
                line.push(b'\n');
                write_flush(&mut stdout, &line).await
            }
        };
        match written {
            Ok(()) => delivered = true,
            Err(_) => {
                reader_gone = true;
                cancel.cancel();
            }
        }
    }
    let (finished, _) = stream.end(trap).await;
    if let Err(failure) = &finished.outcome {
        if delivered {
            eprintln!("{}", failure.service_message);
        } else {
            let json = output::failure_json(&connector.id, failure);
            let _ = write_flush(&mut stdout, format!("{json}\n").as_bytes()).await;
        }
    }
    finished
}

async fn write_flush(out: &mut tokio::io::Stdout, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    out.write_all(bytes).await?;
    out.flush().await
}
