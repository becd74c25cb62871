//! `llmgw`: the LLM API gateway node.
//!
//! `llmgw` with no arguments serves the embedded default configuration (a
//! gateway on 127.0.0.1:8080 in front of the built-in mock provider);
//! `llmgw run -c FILE` serves a configuration file, `llmgw check -c FILE`
//! validates one, `llmgw reload` asks a running gateway to reload its
//! file, and `llmgw mock-upstream` runs the mock provider alone.
//!
//! Signals, as HAProxy's: `SIGHUP` reloads the configuration file,
//! `SIGUSR1` stops softly (stop accepting, let every connection finish —
//! see `llmgw::listen::drain` — then exit, or at `hard-stop-after`),
//! `SIGTERM` and `SIGINT` stop at once. A binary upgrade is HAProxy's
//! too: `llmgw run -c FILE -x SOCKET -sf PID` takes the listening sockets
//! of the running process over its runtime API socket, then asks it to
//! stop softly; `SIGUSR2` makes a running process start that successor
//! itself (from the binary now at its path), for service managers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use llmgw::{admin, config, control, gateway, listen, mock, reload, systemd, threads};
use tokio::sync::Semaphore;

/// mimalloc: glibc's malloc and free were 7 % of a proxied request's CPU
/// (perf, wrk through one thread), mostly the short-lived header maps and
/// buffers of each exchange.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "llmgw",
    version,
    about = "LLM API gateway: HAProxy-grade proxying for LLM traffic",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, `llmgw` runs: these are `run`'s options.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration (the default command).
    Run(Box<RunArgs>),
    /// Validate a configuration file; report every error as FILE:LINE: message.
    Check {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// HAProxy dialect: unsupported tuning-only directives (and the
        /// known faults of HAProxy configurations) become warnings.
        #[arg(long)]
        lenient: bool,
    },
    /// Print an HAProxy `.cfg` as equivalent native TOML.
    Convert {
        /// The HAProxy configuration.
        file: PathBuf,
        #[arg(long)]
        lenient: bool,
    },
    /// Ask a running gateway to reload its configuration file, over its
    /// runtime API socket (which must allow `level admin`), and print the
    /// outcome: the running configuration stays if the file is refused.
    Reload {
        /// The runtime API socket; by default the `stats socket` of the
        /// configuration given with `-c`.
        #[arg(
            short = 'S',
            long = "socket",
            value_name = "PATH",
            required_unless_present = "config"
        )]
        socket: Option<PathBuf>,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[arg(long)]
        lenient: bool,
    },
    /// Run the mock LLM provider (OpenAI and Anthropic APIs) on its own.
    MockUpstream(mock::MockArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file; without it, the embedded default is served.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Replace the first frontend's bind addresses (port 0 = any free port;
    /// the bound address is printed).
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<SocketAddr>,
    /// Replace the stats listener's address.
    #[arg(long = "stats", value_name = "ADDR")]
    stats: Option<SocketAddr>,
    /// HAProxy dialect: unsupported tuning-only directives (and the known
    /// faults of HAProxy configurations) become warnings.
    #[arg(long)]
    lenient: bool,
    /// Binary upgrade (HAProxy's `-x`): take over the listening sockets of
    /// the process whose runtime API listens on SOCKET (configured with
    /// `expose-fd listeners`) instead of binding them anew.
    #[arg(short = 'x', value_name = "SOCKET")]
    takeover: Option<PathBuf>,
    /// Once listening, ask these processes to stop softly (SIGUSR1: finish
    /// what they serve, then exit), as HAProxy's `-sf`.
    #[arg(long = "sf", value_name = "PID", num_args = 1..)]
    soft_stop: Vec<i32>,
    /// Once listening, stop these processes at once (SIGTERM), as
    /// HAProxy's `-st`.
    #[arg(long = "st", value_name = "PID", num_args = 1..)]
    hard_stop: Vec<i32>,
    /// Write the process id to this file once listening.
    #[arg(short = 'p', long = "pidfile", value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Where the node keeps its Raft log, snapshots and id.
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        env = "LLMGW_DATA_DIR",
        default_value = "llmgw-data"
    )]
    data_dir: PathBuf,
    /// This node's id in its cluster (a new data directory only; default 1).
    #[arg(long = "node-id", value_name = "N", env = "LLMGW_NODE_ID")]
    node_id: Option<u64>,
    /// Where the node's gRPC server listens: Raft between nodes, and the
    /// admin API `llmgw-ctl` speaks.
    #[arg(
        long = "cluster-addr",
        value_name = "ADDR",
        env = "LLMGW_CLUSTER_ADDR",
        default_value = "127.0.0.1:7400"
    )]
    cluster_addr: SocketAddr,
    /// Join the cluster this member (its cluster address) belongs to,
    /// instead of starting a cluster of one (a new data directory only).
    #[arg(long = "join", value_name = "ADDR")]
    join: Option<String>,
    /// The node's certificate, key and cluster CA (`ca.pem`, `node.pem`,
    /// `node-key.pem`); default `DATA_DIR/tls`, made there by a node that
    /// starts a cluster by itself and finds none.
    #[arg(long = "tls-dir", value_name = "DIR", env = "LLMGW_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// A new node that neither starts a cluster nor asks to join one: it
    /// waits for `llmgw-ctl cluster join --id N --addr ADDR`.
    #[arg(long = "no-bootstrap", conflicts_with = "join")]
    no_bootstrap: bool,
    /// Raft snapshot (and log compaction) every N entries, as etcd's
    /// `--snapshot-count`.
    #[arg(long = "snapshot-every", value_name = "N", default_value_t = 1000)]
    snapshot_every: u64,
}

/// HAProxy spells its soft- and hard-stop options `-sf` and `-st`; they are
/// read as `--sf` and `--st` here so that its command lines work unchanged.
fn haproxy_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-sf") => "--sf".into(),
        Some("-st") => "--st".into(),
        _ => a,
    })
    .collect()
}

/// glibc hands memory back to the kernel as soon as 128 KiB lie free at the
/// top of the heap, and faults it back in on the next burst: under load that
/// was a `brk` pair and dozens of zeroed pages every few requests (measured:
/// ~20 page faults per proxied request, none for HAProxy). Trimming only
/// past 16 MiB free keeps a busy gateway's heap in place and still returns
/// the memory of a burst that has passed.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse_from(haproxy_spellings(std::env::args_os()));
    match cli.command.unwrap_or(Command::Run(Box::new(cli.run))) {
        Command::Run(args) => run(*args),
        Command::Reload {
            socket,
            config,
            lenient,
        } => ask_reload(socket, config, lenient),
        Command::Convert { file, lenient } => match config::convert::convert_file(&file, lenient) {
            Ok((toml, warnings)) => {
                for w in &warnings {
                    eprintln!("{w}");
                }
                print!("{toml}");
                ExitCode::SUCCESS
            }
            Err(diags) => {
                eprintln!("{diags}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config, lenient } => match config::load_with(&config, lenient) {
            Ok((c, warnings)) => {
                for w in &warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: configuration is valid ({} frontend(s), {} backend(s))",
                    config.display(),
                    c.frontends.len(),
                    c.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(diags) => {
                eprintln!("{diags}");
                ExitCode::FAILURE
            }
        },
        Command::MockUpstream(args) => match mock::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mock-upstream: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Internal logs (`tracing`, on stderr): the level comes from `RUST_LOG`,
/// else the configuration's `log_level`, else `info`.
fn init_tracing(configured: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // openraft narrates every start and election at info.
        tracing_subscriber::EnvFilter::try_new(configured.unwrap_or("info,openraft=warn"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(args: RunArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let embedded = args.config.is_none();
    // The text itself is kept: it is what a new cluster starts with.
    let first = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (path.display().to_string(), text, config::is_haproxy(path)),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => (
            "<embedded default>".to_owned(),
            config::EMBEDDED_DEFAULT.to_owned(),
            false,
        ),
    };
    let loaded = match &args.config {
        Some(path) => config::load_text(
            &first.0,
            &first.1,
            first.2,
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new(".")),
            args.lenient,
        ),
        None => config::load_embedded_default().map(|c| (c, Vec::new())),
    };
    let mut cfg = match loaded {
        Ok((c, warnings)) => {
            // The configuration may set the level: tracing starts once it
            // is read, and its warnings follow.
            init_tracing(c.global.log_level.as_deref());
            for w in warnings {
                tracing::warn!("{w}");
            }
            c
        }
        Err(diags) => {
            eprintln!("{diags}");
            return ExitCode::FAILURE;
        }
    };
    let overrides = reload::Overrides {
        bind: args.bind.clone(),
        stats: args.stats,
    };
    if let Err(e) = overrides.apply(&mut cfg) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let maxconn = listen::fit_maxconn(cfg.global.maxconn);

    // One single-threaded runtime per thread (see `llmgw::threads`); this
    // one also carries the control plane and the accept loops.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = threads::start(rt.handle().clone(), nbthread(&cfg)) {
        eprintln!("cannot start the serving threads: {e}");
        return ExitCode::FAILURE;
    }
    let upgrade = Upgrade::new(&args);
    let cluster = control::ClusterOpts {
        data_dir: args.data_dir.clone(),
        node_id: args.node_id,
        listen: args.cluster_addr,
        join: args.join.clone(),
        takeover: args.takeover.is_some(),
        tls_dir: args.tls_dir.clone(),
        bootstrap: !args.no_bootstrap,
        snapshot_every: args.snapshot_every,
    };
    let reloader = reload::Reloader::new(args.config, args.lenient, overrides);
    match rt.block_on(serve(
        cfg,
        maxconn,
        reloader,
        embedded,
        upgrade,
        (cluster, first),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmgw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a binary upgrade asks of `llmgw run` (HAProxy's `-x`, `-sf`,
/// `-st`), its pidfile, and how to start a successor (`SIGUSR2`).
struct Upgrade {
    takeover: Option<PathBuf>,
    soft_stop: Vec<i32>,
    hard_stop: Vec<i32>,
    pidfile: Option<PathBuf>,
    /// The binary's path as started: after a package upgrade it holds the
    /// new version, which is the point.
    exe: Option<PathBuf>,
    /// `run`'s arguments a successor is started with (then `-x`, `-sf`).
    args: Vec<std::ffi::OsString>,
}

impl Upgrade {
    fn new(args: &RunArgs) -> Upgrade {
        let mut again: Vec<std::ffi::OsString> = vec!["run".into()];
        if let Some(c) = &args.config {
            again.extend(["-c".into(), c.into()]);
        }
        for b in &args.bind {
            again.extend(["--bind".into(), b.to_string().into()]);
        }
        if let Some(s) = args.stats {
            again.extend(["--stats".into(), s.to_string().into()]);
        }
        if args.lenient {
            again.push("--lenient".into());
        }
        if let Some(p) = &args.pidfile {
            again.extend(["-p".into(), p.into()]);
        }
        if let Some(t) = &args.tls_dir {
            again.extend(["--tls-dir".into(), t.into()]);
        }
        again.extend([
            "--snapshot-every".into(),
            args.snapshot_every.to_string().into(),
        ]);
        again.extend([
            "--data-dir".into(),
            args.data_dir.clone().into(),
            "--cluster-addr".into(),
            args.cluster_addr.to_string().into(),
        ]);
        Upgrade {
            takeover: args.takeover.clone(),
            soft_stop: args.soft_stop.clone(),
            hard_stop: args.hard_stop.clone(),
            pidfile: args.pidfile.clone(),
            exe: std::env::current_exe().ok(),
            args: again,
        }
    }

    /// The listening sockets of the running process, when taking over.
    fn inherit(&self) -> Result<Vec<listen::handover::Handed>, String> {
        match &self.takeover {
            Some(path) => listen::handover::fetch(path, std::time::Duration::from_secs(10)),
            None => Ok(Vec::new()),
        }
    }

    /// Once listening, before saying so: the pidfile.
    fn write_pidfile(&self) -> Result<(), String> {
        match &self.pidfile {
            Some(p) => std::fs::write(p, format!("{}\n", std::process::id()))
                .map_err(|e| format!("pidfile {}: {e}", p.display())),
            None => Ok(()),
        }
    }

    /// Once listening: systemd told (this is now the main process), and
    /// only then the previous processes told to go — so that systemd never
    /// sees the service without a main process.
    fn listening(&self) {
        systemd::ready();
        for (pids, sig, how) in [
            (&self.soft_stop, libc::SIGUSR1, "soft stop"),
            (&self.hard_stop, libc::SIGTERM, "stop"),
        ] {
            for &pid in pids {
                // SAFETY: kill(2) with a pid the operator named.
                if unsafe { libc::kill(pid, sig) } != 0 {
                    tracing::warn!(pid, error = %std::io::Error::last_os_error(), "cannot ask the previous process to {how}");
                } else {
                    tracing::info!(pid, "asked the previous process to {how}");
                }
            }
        }
    }

    /// `SIGUSR2`: starts the binary at this process's path with the same
    /// arguments plus `-x SOCKET -sf PID`. The successor takes the
    /// listening sockets over and, once it listens, stops this process
    /// softly; if it fails, this process simply goes on serving.
    fn start_successor(&self, socket: Option<&config::StatsSocket>) {
        let Some(exe) = &self.exe else {
            return tracing::error!("binary upgrade: the path of this binary is unknown");
        };
        let Some(sock) = socket.filter(|s| s.expose_fd) else {
            return tracing::error!("binary upgrade needs a runtime API socket with 'expose-fd listeners' (stats_socket = {{ …, expose_fd_listeners = true }})");
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&self.args)
            .arg("-x")
            .arg(&sock.path)
            .arg("--sf")
            .arg(std::process::id().to_string());
        match cmd.spawn() {
            Ok(child) => tracing::info!(
                pid = child.id(),
                exe = %exe.display(),
                "binary upgrade: successor started; it takes the listening sockets over, then stops this process softly"
            ),
            Err(e) => {
                tracing::error!(exe = %exe.display(), error = %e, "binary upgrade: cannot start the successor")
            }
        }
    }
}

/// HAProxy's `nbthread`: 0 (unset) is one thread per CPU this process
/// may run on, up to `MAX_THREADS` (the readers refuse more when it is
/// written out).
fn nbthread(cfg: &config::Config) -> usize {
    match cfg.global.nbthread {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(config::MAX_THREADS),
        n => n,
    }
}

async fn serve(
    cfg: config::Config,
    maxconn: u32,
    reloader: reload::Reloader,
    embedded: bool,
    upgrade: Upgrade,
    (cluster, first): (control::ClusterOpts, (String, String, bool)),
) -> Result<(), String> {
    let mut signals = Signals::install()?;
    // First, while the previous process is sure to be there.
    let inherited = upgrade.inherit()?;
    let mock = if cfg.uses_builtin_mock() {
        Some(
            mock::spawn_builtin()
                .await
                .map_err(|e| format!("cannot start the built-in mock provider: {e}"))?,
        )
    } else {
        None
    };
    let started = std::time::Instant::now();
    let global_slots = Arc::new(Semaphore::new(maxconn as usize));
    let stats_socket = cfg.global.stats_socket.clone();
    let hard_stop_after = cfg.global.hard_stop_after;
    let nbthread = threads::count();
    let shared = gateway::Shared::new(cfg, mock)?;
    shared.start_checks();

    let listeners = Arc::new(listen::Listeners::new(
        shared.clone(),
        global_slots,
        inherited,
    ));
    let prepared = listeners.prepare(&shared.current.load().config)?;
    listeners.commit(prepared);
    let reloader = Arc::new(reloader);
    // A successor takes the cluster's place once its predecessor let go
    // of it, which it does when asked to stop.
    if upgrade.takeover.is_some() {
        upgrade.write_pidfile()?;
        upgrade.listening();
    }
    // The cluster: a new one of one, one to join, or the one on disk —
    // whose committed configuration then replaces the file's at once.
    let member = control::Control::start(
        &cluster,
        shared.clone(),
        reloader.clone(),
        listeners.clone(),
        first.clone(),
    )
    .await?;
    if let Some(v) = member.current_config().map(|c| c.version) {
        member.wait_applied(v).await?;
    }
    let in_force_is_first = member.current_config().is_none_or(|c| *c.text == *first.1);
    if !embedded {
        member.adopt_file_at_start(first).await;
    }
    // What is in force now, which is not the file's when the cluster's
    // configuration replaced it.
    let mut out = listeners.describe();
    out.push(format!(
        "cluster node {} on grpc://{} (data in {}, configuration version {})",
        member.node.id,
        member.node.addr,
        cluster.data_dir.display(),
        member.applied_version()
    ));
    // The socket bound now is the one a successor takes the listeners from
    // (a reload does not move it).
    let admin_socket = stats_socket.clone();
    if let Some(sock) = stats_socket {
        let listener = admin::bind(&sock)?;
        let mode = sock.mode.map_or("umask".to_owned(), |m| format!("{m:o}"));
        out.push(format!(
            "runtime API on unix socket {} (mode {mode}, level {}{})",
            sock.path.display(),
            sock.level.as_str(),
            if sock.expose_fd {
                ", expose-fd listeners"
            } else {
                ""
            }
        ));
        let ctx = Arc::new(admin::Context {
            shared: shared.clone(),
            reloader: reloader.clone(),
            listeners: listeners.clone(),
            process: admin::Process {
                started,
                started_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                maxconn,
                nbthread,
            },
        });
        tokio::spawn(admin::run(listener, ctx, sock));
    }
    if upgrade.takeover.is_none() {
        upgrade.write_pidfile()?;
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "llmgw {}", env!("CARGO_PKG_VERSION"));
        for line in &out {
            let _ = writeln!(stdout, "{line}");
        }
        if embedded && in_force_is_first {
            let _ = writeln!(
                stdout,
                "serving the embedded default config: requests go to the built-in mock provider.\n\
                 To use real providers, write a config (see deploy/examples/openai-anthropic-vllm.toml) and run\n\
                 `llmgw run -c FILE`; check it first with `llmgw check -c FILE`."
            );
        }
        let _ = stdout.flush();
    }
    if upgrade.takeover.is_none() {
        upgrade.listening();
    }

    let successor = || upgrade.start_successor(admin_socket.as_ref());
    let stop = wait_for_signals(&mut signals, &shared, &reloader, &listeners, &successor).await;
    if stop == Stop::Soft {
        // The cluster first: a successor is waiting for its place.
        member.stop().await;
        soft_stop(&mut signals, &listeners, hard_stop_after).await;
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Stop {
    /// SIGTERM, SIGINT: now.
    Hard,
    /// SIGUSR1: after the connections finish.
    Soft,
}

/// Stops accepting and waits for every connection to finish, at most
/// `hard-stop-after`; a SIGTERM or SIGINT meanwhile ends the wait.
async fn soft_stop(
    signals: &mut Signals,
    listeners: &listen::Listeners,
    hard_stop_after: Option<std::time::Duration>,
) {
    systemd::stopping();
    let open = listeners.open_connections();
    tracing::info!(
        connections = open,
        "soft stop: no longer accepting; waiting for the connections to finish"
    );
    systemd::status(&format!("soft stop: {open} connection(s) finishing"));
    let drained = listeners.stop_and_drain();
    let deadline = async {
        match hard_stop_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let term = async {
        tokio::select! {
            _ = signals.term.recv() => {}
            _ = signals.int.recv() => {}
        }
    };
    tokio::select! {
        _ = drained => tracing::info!("soft stop: every connection finished"),
        _ = deadline => tracing::warn!(
            connections = listeners.open_connections(),
            "soft stop: hard-stop-after reached, closing the connections left"
        ),
        _ = term => tracing::info!("stopping now"),
    }
}

/// Asks the gateway behind a runtime API socket to reload (`llmgw reload`).
fn ask_reload(socket: Option<PathBuf>, config: Option<PathBuf>, lenient: bool) -> ExitCode {
    use std::io::{Read, Write};
    let path = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match config::load_with(&c, lenient) {
            Ok((cfg, _)) => match cfg.global.stats_socket {
                Some(s) => s.path,
                None => {
                    eprintln!("{}: no 'stats socket' configured: the running gateway cannot be reached (send it SIGHUP instead)", c.display());
                    return ExitCode::FAILURE;
                }
            },
            Err(diags) => {
                eprintln!("{diags}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!("llmgw reload: give the runtime API socket (-S PATH) or the configuration (-c FILE)");
            return ExitCode::FAILURE;
        }
    };
    let answer = (|| {
        let mut s = std::os::unix::net::UnixStream::connect(&path)?;
        s.write_all(b"reload\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok::<_, std::io::Error>(answer)
    })();
    match answer {
        Ok(a) => {
            print!("{a}");
            if a.starts_with("Success=1") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("llmgw reload: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The signals the process answers, caught from the start: a signal
/// arriving before the process is ready must not take its default action
/// (for SIGHUP and SIGUSR1/2, ending the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let catch = |k: SignalKind| signal(k).map_err(|e| format!("cannot catch signals: {e}"));
        Ok(Signals {
            term: catch(SignalKind::terminate())?,
            int: catch(SignalKind::interrupt())?,
            hup: catch(SignalKind::hangup())?,
            usr1: catch(SignalKind::user_defined1())?,
            usr2: catch(SignalKind::user_defined2())?,
        })
    }
}

/// Serves signals until one stops the process: SIGINT/SIGTERM (at once)
/// or SIGUSR1 (softly). SIGUSR2 starts a successor (binary upgrade, see
/// [`Upgrade::start_successor`]). SIGHUP reloads the configuration file (validated
/// first; a bad one is refused and the running one stays — see
/// `llmgw::reload`, which the runtime API's `reload` shares).
async fn wait_for_signals(
    signals: &mut Signals,
    shared: &Arc<gateway::Shared>,
    reloader: &Arc<reload::Reloader>,
    listeners: &Arc<listen::Listeners>,
    start_successor: &dyn Fn(),
) -> Stop {
    let Signals {
        term,
        int,
        hup,
        usr1,
        usr2,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => return Stop::Soft,
            _ = usr2.recv() => start_successor(),
            _ = hup.recv() => {
                systemd::reloading();
                // Reading and compiling the file is blocking work: off the
                // runtime's thread, so that traffic is not held up. The
                // outcome is logged by the reloader.
                let (s, r, l) = (shared.clone(), reloader.clone(), listeners.clone());
                let _ = tokio::task::spawn_blocking(move || r.reload(&s, &l)).await;
                systemd::ready();
            }
        }
    }
    systemd::stopping();
    Stop::Hard
}
