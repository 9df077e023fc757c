//! `--shared`: what `serve` needs for client limits counted in Redis and both usage sinks, all
//! real and on 127.0.0.1 (as in `tests/all/limits.rs` and `tests/all/sinks.rs`): Debian's
//! `redis-server`, PyPI's `osmem-server` (an OpenSearch-compatible `_bulk` target) and the OTLP
//! receiver of `tests/py/otlp_receiver.py`. `.ci/run` installs them.
//!
//! Also the floor of the limits' cost: one call of the limits' own Lua script
//! (`acquire.lua`) to that Redis, paced at the bench's rate from one connection, which any
//! implementation that counts atomically in Redis on the request path pays.

use super::Server;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The three components, stopped when dropped.
pub(crate) struct Shared {
    _redis: Server,
    _osmem: Server,
    _otlp: Server,
    /// `redis://127.0.0.1:PORT`.
    pub(crate) redis_url: String,
    /// The `--usage-sink` values.
    pub(crate) sinks: [String; 2],
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(cmd: &mut Command, name: &'static str) -> Server {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("--shared needs {name} (.ci/run installs it): {e}"));
    Server { child, name }
}

impl Shared {
    pub(crate) fn start(dir: &Path) -> Shared {
        let port = free_port();
        let redis_dir = dir.join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let redis = spawn(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&redis_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "redis-server",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }

        let binary = Command::new("python3")
            .args([
                "-c",
                "import osmem_server; print(osmem_server.resolve_binary())",
            ])
            .output()
            .expect("python3");
        assert!(
            binary.status.success(),
            "--shared needs osmem-server (python3 -m pip install osmem-server)"
        );
        let binary = String::from_utf8(binary.stdout).unwrap();
        let mut osmem = spawn(
            Command::new(binary.trim())
                .args(["--addr", "127.0.0.1:0", "--no-ja"])
                .args(["--parent-pid", &std::process::id().to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
            "osmem-server",
        );
        let es = first_line(&mut osmem, |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(v["url"].as_str()?.trim_start_matches("http://").to_owned())
        });

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/otlp_receiver.py");
        let mut otlp = spawn(
            Command::new("python3")
                .arg(&script)
                .arg(dir.join("otlp.jsonl"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            "OTLP receiver",
        );
        let otlp_port = first_line(&mut otlp, |line| {
            line.trim().strip_prefix("listening ").map(str::to_owned)
        });
        Shared {
            _redis: redis,
            _osmem: osmem,
            _otlp: otlp,
            redis_url: format!("redis://127.0.0.1:{port}"),
            sinks: [
                format!("elasticsearch+http://{es}/bench-usage"),
                format!("otlp+http://127.0.0.1:{otlp_port}"),
            ],
        }
    }

    /// The limits' Lua script, called `rate` times a second for `duration` from one
    /// connection, as `serve` calls it (one entry's three keys, limits that never refuse, a
    /// lease); the latencies, sorted.
    pub(crate) async fn acquire_floor(&self, rate: u32, duration: Duration) -> Vec<Duration> {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let script = redis::Script::new(include_str!(
            "../../host-harness/src/serve/limits/acquire.lua"
        ));
        let prefix = "openai-connector:limits:{bench-floor}";
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
        let start = Instant::now();
        let mut latencies = Vec::new();
        for i in 0..total {
            tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
            let issued = Instant::now();
            let answer: Vec<u64> = script
                .key(format!("{prefix}:requests"))
                .key(format!("{prefix}:tokens"))
                .key(format!("{prefix}:in-flight"))
                .arg(1_000_000_000u64)
                .arg(1_000_000_000u64)
                .arg(1_000_000u64)
                .arg(format!("floor:{i}"))
                .arg(1_000u64)
                .invoke_async(&mut connection)
                .await
                .unwrap();
            latencies.push(issued.elapsed());
            assert_eq!(answer, [1], "the floor's acquire was refused");
        }
        latencies.sort();
        latencies
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    socket.write_all(b"PING\r\n").is_ok()
        && socket.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Reads `server`'s stdout until `parse` accepts a line (30 s at most); the rest of its output
/// is drained on a thread.
fn first_line<T: Send + 'static>(
    server: &mut Server,
    parse: impl Fn(&str) -> Option<T> + Send + 'static,
) -> T {
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = parse(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(found);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{} did not say where it listens", server.name))
}
