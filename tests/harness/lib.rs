//! Harness for end-to-end tests: starts the real `llmgw` binary (as gateway
//! or as mock upstream) on ephemeral ports, reads back the addresses it
//! printed, and talks to it over real sockets (HTTP/1.1, h2c, TLS with ALPN).
//! Processes are killed when their handle drops, so a failing test leaves
//! nothing behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The workspace's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The `llmgw` binary built next to this test executable.
pub fn llmgw_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGW_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/llmgw
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("llmgw");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p llmgw`, or run tests/run.sh)",
        bin.display()
    );
    bin
}

/// A child process whose stdout lines are collected; killed on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    /// stderr goes to a file so tests can inspect the logs.
    logs: TempDir,
}

impl Proc {
    /// Runs `llmgw ARGS`.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Self::spawn_program(&llmgw_bin(), args, envs)
    }

    pub fn spawn_program(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let logs = TempDir::new("logs");
        let stderr = std::fs::File::create(logs.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn llmgw");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            logs,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for a stdout line containing `needle` (one already seen
    /// counts); returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait_line_next(needle)
    }

    /// Waits for a line containing `needle` among lines not seen yet.
    pub fn wait_line_next(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "no line containing {needle:?} (exit status {status:?}); saw {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// The first address in a line like `... listening on http://1.2.3.4:5 (...)`.
    pub fn wait_addr(&mut self, needle: &str) -> SocketAddr {
        let line = self.wait_line(needle);
        line.split_whitespace()
            .map(|w| {
                w.trim_start_matches("http://")
                    .trim_start_matches("https://")
            })
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -s {sig} failed");
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stderr of {} ---\n{}", self.child.id(), self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mock LLM provider process.
pub struct Mock {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Mock {
    pub fn start(name: &str, extra: &[&str]) -> Mock {
        Self::start_at(name, "127.0.0.1:0".parse().expect("addr"), extra)
    }

    /// Starts a mock on a given address, e.g. to bring back one that was
    /// killed on the port the gateway knows it by.
    pub fn start_at(name: &str, addr: SocketAddr, extra: &[&str]) -> Mock {
        let listen = addr.to_string();
        let mut args = vec!["mock-upstream", "--listen", &listen, "--name", name];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args, &[]);
        let addr = proc.wait_addr("listening on");
        Mock { proc, addr }
    }
}

/// A gateway process serving a config written to a temporary directory.
pub struct Gateway {
    pub proc: Proc,
    pub dir: TempDir,
    /// Bound addresses, in the order the gateway printed them.
    pub addrs: Vec<SocketAddr>,
    pub config_path: PathBuf,
}

impl Gateway {
    /// Starts `llmgw run -c CONFIG`; `expected_binds` listener lines are read.
    pub fn start(config: &str, expected_binds: usize) -> Gateway {
        Self::start_env(config, expected_binds, &[])
    }

    pub fn start_env(config: &str, expected_binds: usize, envs: &[(&str, &str)]) -> Gateway {
        Self::start_file("llmgw.toml", config, expected_binds, &[], envs)
    }

    /// Starts `llmgw run -c DIR/FILE_NAME ARGS…` (e.g. an HAProxy `.cfg`).
    pub fn start_file(
        file_name: &str,
        config: &str,
        expected_binds: usize,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Gateway {
        let dir = TempDir::new("gw");
        let config_path = dir.path().join(file_name);
        std::fs::write(&config_path, config).expect("write config");
        let path = config_path.to_string_lossy().into_owned();
        let mut all = vec!["run", "-c", &path];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(&all, envs);
        let mut addrs = Vec::new();
        proc.wait_line("llmgw ");
        for _ in 0..expected_binds {
            let line = proc.wait_line_next("listening on");
            let tail = line.rsplit("://").next().unwrap_or_default();
            addrs.push(
                tail.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad line {line:?}")),
            );
        }
        Gateway {
            proc,
            dir,
            addrs,
            config_path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs[0], path)
    }
}

/// Starts an HAProxy-dialect gateway (`llmgw.cfg`).
pub fn start_cfg(config: &str, expected_binds: usize, args: &[&str]) -> Gateway {
    Gateway::start_file("llmgw.cfg", config, expected_binds, args, &[])
}

/// A config with one frontend `f` on an ephemeral port whose default
/// backend `b` has one server `s` at `server`; `frontend` and `backend` are
/// extra TOML lines for those sections.
pub fn one_backend(frontend: &str, backend: &str, server: impl std::fmt::Display) -> String {
    format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n{frontend}\n\
         [[backend]]\nname = \"b\"\n{backend}\n[[backend.server]]\nname = \"s\"\naddress = \"{server}\"\n"
    )
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "llmgw-{prefix}-{}-{:x}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 or h2c client with a keep-alive pool.
pub struct Client {
    inner: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Client {
    pub fn http1() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn h2c() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = self.inner.request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(Method::GET, url, &[], "").await
    }

    pub async fn post_json(&self, url: &str, body: &str) -> Resp {
        self.send(
            Method::POST,
            url,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Sends a request and returns the response head and its body frames
    /// with the time each arrived, for streaming tests.
    pub async fn stream(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (http::response::Parts, hyper::body::Incoming) {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = self.inner.request(req).await.expect("request failed");
        resp.into_parts()
    }
}

/// A self-signed certificate for `names`, written as PEM files.
pub struct Cert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: rustls_pki_types::CertificateDer<'static>,
}

impl Cert {
    pub fn generate(dir: &Path, stem: &str, names: &[&str]) -> Cert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_path, ck.key_pair.serialize_pem()).expect("write key");
        Cert {
            cert_path,
            key_path,
            der: ck.cert.der().clone(),
        }
    }
}

/// Connects over TLS trusting only `roots`, offering `alpn`, with `sni`.
/// Returns the stream and the negotiated ALPN protocol and the server's
/// leaf certificate.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    roots: &[&rustls_pki_types::CertificateDer<'static>],
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
    Vec<u8>,
) {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).expect("sni");
    let tls = connector.connect(name, tcp).await.expect("tls handshake");
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    (tls, alpn, leaf)
}

/// Sends one request over an established stream with HTTP/1.1 or h2.
pub async fn send_on<S>(stream: S, h2: bool, req: Request<Full<Bytes>>) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("h2 request")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("h1 request")
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
