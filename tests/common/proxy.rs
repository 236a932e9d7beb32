//! The compiled launch-proxy binary as a child process of the test.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::util::{
    conn_value, free_port, is_self_connection, keep_dirs, send_signal, tail_file, unique_dir,
};

/// How long [`ProxyProcess::start`] waits for the listen port to accept.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running launch-proxy. Dropping it SIGKILLs the process, waits for it and removes
/// its directory (config, users file and `proxy.log`).
pub struct ProxyProcess {
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl ProxyProcess {
    /// Writes `config_yaml` to `dir/launch-proxy.yaml` and `users_yaml` to
    /// `dir/users.yaml`, starts the binary with `--listen`/`--metrics-listen` on fresh
    /// 127.0.0.1 ports and waits (up to 15 s) until the listen port accepts. Panics with
    /// the proxy log if the process exits first.
    pub fn start(config_yaml: &str, users_yaml: &str) -> ProxyProcess {
        Self::start_with_env(config_yaml, users_yaml, &[])
    }

    /// [`ProxyProcess::start`] with extra environment variables for the proxy alone: the
    /// tests share one process, where `std::env::set_var` would race the others.
    pub fn start_with_env(
        config_yaml: &str,
        users_yaml: &str,
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        Self::start_at(config_yaml, users_yaml, None, env)
    }

    /// [`ProxyProcess::start_with_env`] listening on `port` when given (a second process
    /// on another's port, with `so_reuseport`), else on a fresh one.
    pub fn start_at(
        config_yaml: &str,
        users_yaml: &str,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let dir = unique_dir("proxy");
        let config = dir.join("launch-proxy.yaml");
        fs::write(&config, config_yaml).expect("write proxy config");
        fs::write(dir.join("users.yaml"), users_yaml).expect("write users file");

        let mut last_log = String::new();
        // Retry only when a port picked by free_port() was taken by someone else.
        for _ in 0..3 {
            match launch(&dir, &config, port, env) {
                Ok((child, port, metrics_port)) => {
                    return ProxyProcess {
                        port,
                        metrics_port,
                        dir,
                        child,
                        exited: None,
                    }
                }
                Err(log) if port.is_none() => last_log = log,
                Err(log) => panic!("launch-proxy could not share port {port:?}; log:\n{log}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("launch-proxy could not bind its ports after 3 attempts; log:\n{last_log}");
    }

    /// `host=127.0.0.1 port=.. user=.. password=.. dbname=launch`
    pub fn conn_string(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=launch",
            self.port,
            conn_value(user),
            conn_value(password)
        )
    }

    /// Connects through the proxy (no TLS); the connection task is spawned on the
    /// current tokio runtime and its error, if any, is dropped.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_string(user, password), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:"));
        line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// The process's open file descriptors.
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Sends a signal by name ("TERM", "HUP", "INT", ...).
    pub fn signal(&self, signal: &str) {
        if self.exited.is_none() {
            send_signal(&self.child.id().to_string(), signal);
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGTERM and waits (up to 10 s) for the proxy to log that its drain began.
    pub fn begin_drain(&self) {
        self.sigterm();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("shutting down") {
            assert!(Instant::now() < deadline, "no drain; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Everything the proxy wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        let bytes = fs::read(self.dir.join("proxy.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// GET /metrics on the metrics port; returns the body. Retries the connection for
    /// up to 5 s (the metrics listener may come up just after the proxy port); panics on
    /// a non-200 answer.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert!(
            status == 200,
            "GET /metrics answered {status}; body:\n{body}"
        );
        body
    }

    /// A plain HTTP/1.1 GET on the metrics port: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    panic!("connect to metrics port {}: {e}", self.metrics_port)
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set_read_timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.metrics_port
        );
        stream
            .write_all(request.as_bytes())
            .expect("send metrics request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read metrics response");
        parse_http_response(&raw)
    }
}

/// The launch-proxy binary under test: `$LP_PROXY_BIN` when set (a build cargo did not make
/// for this suite, such as scripts/build-pgo's), else the one cargo built with the tests.
pub fn proxy_binary() -> PathBuf {
    std::env::var_os("LP_PROXY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_launch-proxy")))
}

/// Starts the binary on `shared_port` (or a fresh one) and a fresh metrics port and waits
/// (up to 15 s) until it serves: the child and its ports, or the log when a port was taken.
/// Panics with the log if the process exits for another reason. On a shared port another
/// process may answer, so the proxy's own "ready" log line is waited for too (its logging
/// must include `info`).
fn launch(
    dir: &Path,
    config: &Path,
    shared_port: Option<u16>,
    env: &[(&str, &str)],
) -> Result<(Child, u16, u16), String> {
    let port = shared_port.unwrap_or_else(free_port);
    let metrics_port = free_port();
    let mut child = spawn_proxy(dir, config, port, metrics_port, env);
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = || tail_file(&dir.join("proxy.log"), 200);
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let text = log();
            if text.contains("Address already in use") {
                return Err(text); // next attempt with new ports
            }
            let _ = fs::remove_dir_all(dir);
            panic!("launch-proxy exited during startup ({status}); log:\n{text}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_ok_and(|s| !is_self_connection(&s))
            && (shared_port.is_none() || log().contains("launch-proxy ready"))
        {
            return Ok((child, port, metrics_port));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = log();
            let _ = fs::remove_dir_all(dir);
            panic!(
                "launch-proxy did not accept on 127.0.0.1:{port} within \
                 {START_TIMEOUT:?}; log:\n{text}"
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Starts the binary with its output appended to `dir/proxy.log`.
fn spawn_proxy(
    dir: &Path,
    config: &Path,
    port: u16,
    metrics_port: u16,
    env: &[(&str, &str)],
) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("proxy.log"))
        .expect("open proxy.log");
    Command::new(proxy_binary())
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env(
            "RUST_LOG",
            std::env::var("LP_PROXY_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start launch-proxy: {e}"))
}

/// Splits a raw HTTP/1.x response into (status, body), honouring Content-Length and
/// chunked transfer encoding.
fn parse_http_response(raw: &[u8]) -> (u16, String) {
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "malformed HTTP response: {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..text_end]).into_owned();
    let mut body = &raw[text_end + 4..];
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("malformed HTTP status line: {head:?}"));
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&body[..eol]).into_owned();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
            body = &body[eol + 2..];
            if size == 0 || body.len() < size {
                out.extend_from_slice(&body[..size.min(body.len())]);
                break;
            }
            out.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or(&[]);
        }
        return (status, String::from_utf8_lossy(&out).into_owned());
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = &body[..len.min(body.len())];
    }
    (status, String::from_utf8_lossy(body).into_owned())
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // Whether the process was still running when the test ended tells a failure that
        // killed it (a signal leaves no log line) from one the proxy answered.
        let state = match self.try_wait() {
            Some(status) => format!("had exited: {status}"),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "was running".to_owned()
            }
        };
        let log = self.dir.join("proxy.log");
        if thread::panicking() {
            eprintln!(
                "--- launch-proxy log tail (port {}, pid {}, {}; the process {state}) ---\n{}",
                self.port,
                self.child.id(),
                self.dir.display(),
                tail_file(&log, 80)
            );
        }
        // A panic in one of the proxy's tasks ends only that client's session, which a test
        // may not notice; the suite's build has the proxy's debug assertions on
        // (Cargo.toml, profile.ci), so a broken invariant must fail the test that broke it.
        let panicked = !thread::panicking()
            && fs::read_to_string(&log).is_ok_and(|text| text.contains("panicked at"));
        if !keep_dirs() && !panicked {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if panicked {
            panic!(
                "launch-proxy panicked during the test (log kept in {}):\n{}",
                self.dir.display(),
                tail_file(&log, 80)
            );
        }
    }
}
