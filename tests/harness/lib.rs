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

/// The Python the Python-driven tests run: `LLMGW_TEST_PYTHON`, else the
/// virtualenv tests/run.sh creates (with openai, anthropic and h2).
pub fn python() -> String {
    if let Ok(p) = std::env::var("LLMGW_TEST_PYTHON") {
        return p;
    }
    let venv = root().join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "the Python tests need Python with the openai, anthropic and h2 packages: run tests/run.sh (it creates {})",
        venv.display()
    );
    venv.to_string_lossy().into_owned()
}

/// A process's resident memory (`VmRSS` of /proc/PID/status), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
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
            .stdin(Stdio::null())
            // Every gateway is a cluster of one of its own unless told
            // otherwise: its data beside its logs, its gRPC port free.
            .env("LLMGW_DATA_DIR", logs.path().join("data"))
            .env("LLMGW_CLUSTER_ADDR", "127.0.0.1:0");
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
                        "no line containing {needle:?} (exit status {status:?}); saw {:?}; stderr: {}",
                        self.seen,
                        self.stderr()
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

/// One client per request path, named: HTTP/1.1 (the gateway's engine)
/// and h2c (the general path).
pub fn clients() -> [(&'static str, Client); 2] {
    [("http1", Client::http1()), ("h2c", Client::h2c())]
}

/// Makes the mock at `m` fail every request as `fail` says
/// (`status:NNN`, `hang`, `close`, `reset-mid-stream`, … or `none`).
pub async fn mock_force(c: &Client, m: SocketAddr, fail: &str) {
    let r = c
        .send(
            Method::POST,
            &format!("http://{m}/mock/fail?fail={fail}"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Chat completions the mock at `m` answered (injected failures count).
pub async fn mock_chats(c: &Client, m: SocketAddr) -> u64 {
    let j = c.get(&format!("http://{m}/mock/stats")).await.json();
    j["by_path"]["/v1/chat/completions"].as_u64().unwrap_or(0)
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

/// The SHA-256 a `[[client_keys.key]]` holds for `key`, in hex (what
/// `printf %s "$KEY" | sha256sum` prints).
pub fn sha256_hex(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
#[derive(Clone)]
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

// ---------------------------------------------------------------------------
// Raw HTTP/1 over TCP: exact bytes written, exact bytes read back. For tests
// where the framing itself is under test, which a real HTTP client would hide
// (or refuse to produce).
// ---------------------------------------------------------------------------

/// How long a raw read waits before the test fails as hung.
const RAW_READ_LIMIT: Duration = Duration::from_secs(10);

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the head (through CRLFCRLF) at the start of `buf`.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// The start line and the headers (names lower-cased) of a complete head.
fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (start, headers)
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n == "transfer-encoding"
            && v.rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// The length of the complete chunked body at the start of `b` (chunk
/// extensions and trailers included); `Ok(None)` while it is incomplete.
pub fn chunked_len(b: &[u8]) -> Result<Option<usize>, String> {
    let mut i = 0;
    loop {
        let Some(eol) = find(&b[i..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&b[i..i + eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| format!("invalid chunk size line {line:?}"))?;
        i += eol + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(eol) = find(&b[i..], b"\r\n") else {
                    return Ok(None);
                };
                i += eol + 2;
                if eol == 0 {
                    return Ok(Some(i));
                }
            }
        }
        if b.len() < i + size + 2 {
            return Ok(None);
        }
        if &b[i + size..i + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        i += size + 2;
    }
}

/// The data of the complete chunks at the start of `b` (framing removed).
pub fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(eol) = find(&b[i..], b"\r\n") {
        let line = String::from_utf8_lossy(&b[i..i + eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        i += eol + 2;
        if size == 0 || b.len() < i + size {
            break;
        }
        out.extend_from_slice(&b[i..i + size]);
        i += size + 2;
    }
    out
}

/// The length of the complete request at the start of `buf`, if it is
/// complete; `Err` if its chunked body is malformed.
pub fn request_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(h) = head_len(buf) else {
        return Ok(None);
    };
    let (_, headers) = parse_head(&buf[..h]);
    if is_chunked(&headers) {
        return Ok(chunked_len(&buf[h..])?.map(|n| h + n));
    }
    let cl = match header_of(&headers, "content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("bad length {v:?}"))?,
        None => 0,
    };
    Ok((buf.len() >= h + cl).then_some(h + cl))
}

/// An HTTP/1 message as it crossed the wire, split into head and body.
#[derive(Clone)]
pub struct RawMessage {
    /// Everything, head and body, exactly as sent.
    pub raw: Vec<u8>,
    /// The request or status line.
    pub start: String,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body exactly as sent (chunk framing included).
    pub raw_body: Vec<u8>,
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.raw))
    }
}

impl RawMessage {
    pub fn parse(raw: &[u8]) -> RawMessage {
        let h = head_len(raw).unwrap_or(raw.len());
        let (start, headers) = parse_head(&raw[..h]);
        RawMessage {
            raw: raw.to_vec(),
            start,
            headers,
            raw_body: raw[h..].to_vec(),
        }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The body's content: chunk framing removed when the message is chunked.
    pub fn body(&self) -> Vec<u8> {
        if is_chunked(&self.headers) {
            dechunk(&self.raw_body)
        } else {
            self.raw_body.clone()
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }
}

/// A response read by a [`RawClient`].
#[derive(Debug)]
pub struct RawResponse {
    pub msg: RawMessage,
    pub status: u16,
    /// The body ended where its framing says (or at the close, for a
    /// close-delimited one); `false`: the connection ended first.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.msg.header(name)
    }

    pub fn body_text(&self) -> String {
        self.msg.body_text()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.msg.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body_text()))
    }
}

/// A client connection that writes exactly the bytes it is given and parses
/// responses itself.
pub struct RawClient {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Takes over a stream already connected, with the bytes already read
    /// from it.
    pub fn from_stream(stream: tokio::net::TcpStream, read: Vec<u8>) -> RawClient {
        RawClient { stream, buf: read }
    }

    /// Writes `bytes` in one write.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more into the buffer; `false` at end of stream (or a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(RAW_READ_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "nothing read within {RAW_READ_LIMIT:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one response to a request with a body-bearing method; `None`
    /// if the connection ended before a complete head.
    pub async fn response(&mut self) -> Option<RawResponse> {
        self.read_response(false).await
    }

    /// Reads one response to a HEAD request (which never has a body).
    pub async fn head_response(&mut self) -> Option<RawResponse> {
        self.read_response(true).await
    }

    async fn read_response(&mut self, head_request: bool) -> Option<RawResponse> {
        let h = loop {
            if let Some(h) = head_len(&self.buf) {
                break h;
            }
            if !self.fill().await {
                return None;
            }
        };
        let (start, headers) = parse_head(&self.buf[..h]);
        let status: u16 = start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {start:?}"));
        let bodiless =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let (len, complete) = if bodiless {
            (0, true)
        } else if is_chunked(&headers) {
            loop {
                match chunked_len(&self.buf[h..]) {
                    Ok(Some(n)) => break (n, true),
                    Ok(None) => {}
                    Err(e) => panic!("malformed chunked response ({e}): {:?}", self.buf),
                }
                if !self.fill().await {
                    break (self.buf.len() - h, false);
                }
            }
        } else if let Some(cl) = header_of(&headers, "content-length") {
            let cl: usize = cl.parse().expect("content-length");
            loop {
                if self.buf.len() >= h + cl {
                    break (cl, true);
                }
                if !self.fill().await {
                    break (self.buf.len() - h, false);
                }
            }
        } else {
            // Close-delimited.
            while self.fill().await {}
            (self.buf.len() - h, true)
        };
        let raw: Vec<u8> = self.buf.drain(..h + len).collect();
        Some(RawResponse {
            msg: RawMessage::parse(&raw),
            status,
            complete,
        })
    }

    /// Waits up to `limit` for the server to end the connection. `true`
    /// once it has (nothing unread may remain); `false` if it is still open.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    assert!(
                        self.buf.is_empty(),
                        "unread bytes before the close: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return true;
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }

    /// Reads until the unread bytes contain `needle`, and takes them all.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        while find(&self.buf, needle).is_none() {
            assert!(
                self.fill().await,
                "closed before {:?}; have {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.buf)
            );
        }
        std::mem::take(&mut self.buf)
    }

    /// Bytes read but not consumed by a response.
    pub fn unread(&self) -> &[u8] {
        &self.buf
    }
}

/// Connects, writes `bytes`, and returns the raw bytes of the first
/// response (the whole of it, or whatever came before the connection ended).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut c = RawClient::connect(addr).await;
    c.send(bytes).await;
    match c.response().await {
        Some(r) => r.msg.raw,
        None => c.buf,
    }
}

/// `HTTP/1.1 200 OK` with `body` and its `Content-Length`.
pub fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a [`RawUpstream`] does with the next request it receives.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Writes the bytes; the connection stays open for the next request.
    Send(Vec<u8>),
    /// Writes the bytes, then closes the connection (FIN).
    Close(Vec<u8>),
    /// Writes the bytes, then resets the connection (RST).
    Reset(Vec<u8>),
    /// Writes the bytes, then echoes every further byte (a tunnel, after a
    /// `101 Switching Protocols`).
    Echo(Vec<u8>),
    /// Writes the bytes as soon as the request's head is in, reading none
    /// of its body, then closes: the unread body makes the close a reset.
    /// A server refusing a request by its head (a `413` before a large
    /// body) does this.
    EarlyClose(Vec<u8>),
    /// Writes the bytes as soon as the request's head is in, then reads
    /// nothing more and keeps the connection open until the upstream is
    /// dropped: whoever sends the body blocks once the buffers are full.
    EarlyStall(Vec<u8>),
}

/// What a [`RawUpstream`] saw on one accepted connection.
#[derive(Clone, Default)]
pub struct UpstreamConn {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The complete requests among them, in order.
    pub requests: Vec<RawMessage>,
    /// The connection is over (either side closed it).
    pub closed: bool,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .field("requests", &self.requests.len())
            .field("closed", &self.closed)
            .finish()
    }
}

#[derive(Default)]
struct RawUpstreamState {
    conns: std::sync::Mutex<Vec<UpstreamConn>>,
    replies: std::sync::Mutex<std::collections::VecDeque<Reply>>,
}

impl RawUpstreamState {
    fn update(&self, conn: usize, f: impl FnOnce(&mut UpstreamConn)) {
        let mut conns = self.conns.lock().expect("lock");
        f(&mut conns[conn]);
    }
}

/// An HTTP/1 upstream on `127.0.0.1:0` that records every byte it receives,
/// per connection, and answers each complete request with the next scripted
/// [`Reply`] (then with `200 ok` once the script is used up). It runs on its
/// own thread, so blocking in the test does not stall it; it stops on drop.
pub struct RawUpstream {
    pub addr: SocketAddr,
    state: Arc<RawUpstreamState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RawUpstream {
    pub fn start(script: Vec<Reply>) -> RawUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(RawUpstreamState::default());
        state.replies.lock().expect("lock").extend(script);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((s, _)) = listener.accept().await else {
                            continue;
                        };
                        let idx = {
                            let mut conns = st.conns.lock().expect("lock");
                            conns.push(UpstreamConn::default());
                            conns.len() - 1
                        };
                        tokio::spawn(raw_upstream_conn(s, idx, st.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        RawUpstream {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// What each accepted connection saw so far, in accept order.
    pub fn connections(&self) -> Vec<UpstreamConn> {
        self.state.conns.lock().expect("lock").clone()
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.state.conns.lock().expect("lock").len()
    }

    /// Every complete request received, in order, over all connections.
    pub fn requests(&self) -> Vec<RawMessage> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.requests)
            .collect()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn raw_upstream_conn(mut s: tokio::net::TcpStream, idx: usize, st: Arc<RawUpstreamState>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            if let Some(h) = head_len(&pending) {
                let early = {
                    let mut replies = st.replies.lock().expect("lock");
                    match replies.front() {
                        Some(Reply::EarlyClose(_) | Reply::EarlyStall(_)) => replies.pop_front(),
                        _ => None,
                    }
                };
                if let Some(reply) = early {
                    st.update(idx, |c| c.requests.push(RawMessage::parse(&pending[..h])));
                    let (Reply::EarlyClose(b) | Reply::EarlyStall(b)) = &reply else {
                        return;
                    };
                    let _ = s.write_all(b).await;
                    if matches!(reply, Reply::EarlyStall(_)) {
                        std::future::pending::<()>().await;
                    }
                    st.update(idx, |c| c.closed = true);
                    return;
                }
            }
            // A malformed body stops the parsing: those bytes are recorded,
            // never taken for a request.
            let Ok(Some(n)) = request_len(&pending) else {
                break;
            };
            let req: Vec<u8> = pending.drain(..n).collect();
            st.update(idx, |c| c.requests.push(RawMessage::parse(&req)));
            let reply = st
                .replies
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| Reply::Send(ok_response("ok")));
            match reply {
                Reply::Send(b) => {
                    if s.write_all(&b).await.is_err() {
                        st.update(idx, |c| c.closed = true);
                        return;
                    }
                }
                // Taken when the head came in, before the request was whole.
                Reply::EarlyClose(_) | Reply::EarlyStall(_) => return,
                Reply::Close(b) => {
                    let _ = s.write_all(&b).await;
                    let _ = s.shutdown().await;
                    st.update(idx, |c| c.closed = true);
                    // Drain until the peer closes too, so the close is a
                    // clean FIN both ways (unread data would make it a RST).
                    let _ = tokio::time::timeout(Duration::from_secs(30), async {
                        while let Ok(n) = s.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
                Reply::Reset(b) => {
                    let _ = s.write_all(&b).await;
                    let _ = s.set_zero_linger();
                    st.update(idx, |c| c.closed = true);
                    return;
                }
                Reply::Echo(b) => {
                    let _ = s.write_all(&b).await;
                    if !pending.is_empty() {
                        let _ = s.write_all(&pending).await;
                    }
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                st.update(idx, |c| c.bytes.extend_from_slice(&chunk[..n]));
                                if s.write_all(&chunk[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    st.update(idx, |c| c.closed = true);
                    return;
                }
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                st.update(idx, |c| c.closed = true);
                return;
            }
            Ok(n) => {
                st.update(idx, |c| c.bytes.extend_from_slice(&chunk[..n]));
                pending.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The runtime API: HAProxy's text protocol over a unix socket, spoken the
// way `socat - UNIX-CONNECT:PATH` does, without needing socat.
// ---------------------------------------------------------------------------

/// How long a runtime API exchange may take before the test fails as hung.
const RUNTIME_API_LIMIT: Duration = Duration::from_secs(10);

/// One-shot: connects, sends `line` and its line feed, and returns every
/// byte the server sends until it closes (as `echo LINE | socat …`).
pub async fn runtime_api(path: &Path, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(RUNTIME_API_LIMIT, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{line:?}: no close within {RUNTIME_API_LIMIT:?}"))
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// An interactive (`prompt`) runtime API session.
pub struct RuntimeApi {
    stream: tokio::net::UnixStream,
    buf: Vec<u8>,
}

impl RuntimeApi {
    /// Connects and enters prompt mode; returns the session and the
    /// server's first bytes (HAProxy answers `prompt` with `"\n> "`).
    pub async fn prompt(path: &Path) -> (RuntimeApi, String) {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        let mut s = RuntimeApi {
            stream,
            buf: Vec::new(),
        };
        let first = s.send("prompt").await;
        (s, first)
    }

    /// Sends one line and returns the raw answer, up to and including the
    /// prompt that follows it (`> `).
    pub async fn send(&mut self, line: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        let mut chunk = [0u8; 16 * 1024];
        while !self.buf.ends_with(b"> ") {
            let n = tokio::time::timeout(RUNTIME_API_LIMIT, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{line:?}: no prompt within {RUNTIME_API_LIMIT:?}; have {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                })
                .expect("read");
            assert!(
                n > 0,
                "{line:?}: closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    /// Sends `line` and returns what arrives until the server closes.
    pub async fn send_until_closed(mut self, line: &str) -> String {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        self.wait_closed().await
    }

    /// Sends nothing; returns what arrives until the server closes.
    pub async fn wait_closed(mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = std::mem::take(&mut self.buf);
        tokio::time::timeout(RUNTIME_API_LIMIT, self.stream.read_to_end(&mut out))
            .await
            .unwrap_or_else(|_| panic!("no close within {RUNTIME_API_LIMIT:?}"))
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What a [`Load`] saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests answered 200 with a complete body.
    pub ok: u64,
    /// Requests not answered, or answered with anything but 200: a
    /// refused or reset connection, a response cut short, an error status.
    pub failed: u64,
    /// The first failures, described.
    pub errors: Vec<String>,
    /// Responses that closed their connection (`Connection: close`).
    pub closed_by_server: u64,
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.errors.len() < 20 {
            self.errors.push(why);
        }
    }

    fn add(&mut self, o: Tally) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.closed_by_server += o.closed_by_server;
        for e in o.errors {
            if self.errors.len() < 20 {
                self.errors.push(e);
            }
        }
    }
}

/// An HTTP/1.1 load at a fixed rate over keep-alive connections, as a
/// client like `oha -q RATE` makes it: each of `conns` connections sends
/// a request every `conns / rate` seconds, reusing its connection until
/// the server closes it (`Connection: close`, or a close between
/// requests: either is seen before the next request is written, so a
/// graceful close never costs a request), then connecting again. A
/// request written on a connection the server closed at the same moment
/// is a failure, as it is for any client: that race is what a zero-drop
/// reload must not have.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    /// Starts the load: POST `path` with `body` (JSON) to `addr`.
    pub fn start(addr: SocketAddr, path: &str, body: &str, conns: usize, rate: u32) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let every = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
        let request = Bytes::from(format!(
            "POST {path} HTTP/1.1\r\nhost: load.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        let tasks = (0..conns)
            .map(|i| {
                let (stop, request, answered) = (stop.clone(), request.clone(), answered.clone());
                tokio::spawn(async move {
                    // Spread the connections' ticks over the period.
                    tokio::time::sleep(every.mul_f64(i as f64 / conns as f64)).await;
                    load_one(addr, request, every, stop, answered).await
                })
            })
            .collect();
        Load {
            stop,
            answered,
            tasks,
        }
    }

    /// Requests answered 200 so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests have been answered (the load is
    /// flowing), failing the test after 20 s.
    pub async fn wait_answered(&self, n: u64) {
        let target = self.answered() + n;
        eventually(Duration::from_secs(20), || async {
            (self.answered() >= target).then_some(())
        })
        .await;
    }

    /// Stops sending and returns what was seen.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Tally::default();
        for t in self.tasks {
            all.add(t.await.expect("load task"));
        }
        all
    }
}

async fn load_one(
    addr: SocketAddr,
    request: Bytes,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
) -> Tally {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut t = Tally::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut buf = Vec::with_capacity(8192);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        // A connection the server closed while idle is seen closed here,
        // before a request is written on it.
        if let Some(c) = &conn {
            let mut probe = [0u8; 1];
            match c.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => conn = None,
            }
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match tokio::net::TcpStream::connect(addr).await {
                Ok(c) => {
                    let _ = c.set_nodelay(true);
                    conn.insert(c)
                }
                Err(e) => {
                    t.fail(format!("connect: {e}"));
                    continue;
                }
            },
        };
        buf.clear();
        let answer = async {
            c.write_all(&request)
                .await
                .map_err(|e| format!("write: {e}"))?;
            loop {
                if let Some(h) = head_len(&buf) {
                    let (start, headers) = parse_head(&buf[..h]);
                    let body = &buf[h..];
                    let done = if is_chunked(&headers) {
                        chunked_len(body)?.is_some()
                    } else {
                        let n: usize = header_of(&headers, "content-length")
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| format!("no length: {start}"))?;
                        body.len() >= n
                    };
                    if done {
                        let close = header_of(&headers, "connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                        return Ok((start, close));
                    }
                }
                let mut chunk = [0u8; 8192];
                match c.read(&mut chunk).await {
                    Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("read after {} bytes: {e}", buf.len())),
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok((start, close))) => {
                if start.starts_with("HTTP/1.1 200") {
                    t.ok += 1;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    t.fail(start);
                }
                if close {
                    t.closed_by_server += 1;
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                t.fail(e);
                conn = None;
            }
            Err(_) => {
                t.fail("no answer within 10 s".into());
                conn = None;
            }
        }
    }
    t
}
