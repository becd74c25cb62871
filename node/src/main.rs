//! `llmgw`: the LLM API gateway node.
//!
//! `llmgw` with no arguments serves the embedded default configuration (a
//! gateway on 127.0.0.1:8080 in front of the built-in mock provider);
//! `llmgw run -c FILE` serves a configuration file, `llmgw check -c FILE`
//! validates one, and `llmgw mock-upstream` runs the mock provider alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use llmgw::{admin, config, gateway, listen, mock, reload, stats};
use tokio::sync::Semaphore;

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
    Run(RunArgs),
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
    /// Run the mock LLM provider (OpenAI and Anthropic APIs) on its own.
    MockUpstream(mock::MockArgs),
}

#[derive(clap::Args, Default)]
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
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(args),
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
        tracing_subscriber::EnvFilter::try_new(configured.unwrap_or("info"))
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
    let loaded = match &args.config {
        Some(path) => config::load_with(path, args.lenient),
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

    // One thread: a current-thread runtime, no cross-thread wake-ups.
    let rt = match cfg.global.nbthread {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = reload::Reloader::new(args.config, args.lenient, overrides);
    match rt.block_on(serve(cfg, maxconn, reloader, embedded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmgw: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    cfg: config::Config,
    maxconn: u32,
    reloader: reload::Reloader,
    embedded: bool,
) -> Result<(), String> {
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
    let stats_addr = cfg.global.stats;
    let stats_socket = cfg.global.stats_socket.clone();
    let nbthread = match cfg.global.nbthread {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let frontends = cfg.frontends.clone();
    let shared = gateway::Shared::new(cfg, mock)?;
    shared.start_checks();

    let mut out = Vec::new();
    for fe in &frontends {
        let fe_slots = (fe.maxconn > 0).then(|| Arc::new(Semaphore::new(fe.maxconn as usize)));
        for bind in &fe.binds {
            let l = listen::Listener::new(
                &fe.name,
                fe.mode,
                bind,
                fe.timeouts.clone(),
                fe_slots.clone(),
                global_slots.clone(),
                shared.clone(),
            )
            .map_err(|e| format!("frontend '{}': {e}", fe.name))?;
            let sock = listen::bind_tcp(bind.addr)
                .map_err(|e| format!("cannot bind {}: {e}", bind.addr))?;
            let local = sock.local_addr().map_err(|e| e.to_string())?;
            let scheme = match (fe.mode, bind.tls.is_some()) {
                (config::Mode::Tcp, false) => "tcp",
                (config::Mode::Tcp, true) => "tcp+tls",
                (config::Mode::Http, true) => "https",
                (config::Mode::Http, false) => "http",
            };
            out.push(format!(
                "frontend '{}' listening on {scheme}://{local}",
                fe.name
            ));
            tokio::spawn(Arc::new(l).run(sock));
        }
    }
    if let Some(addr) = stats_addr {
        let sock = listen::bind_tcp(addr)
            .map_err(|e| format!("cannot bind stats listener {addr}: {e}"))?;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        out.push(format!(
            "stats listening on http://{local} (/stats, /stats.json, /metrics, /healthz)"
        ));
        tokio::spawn(stats::run(sock, shared.clone()));
    }
    let reloader = Arc::new(reloader);
    if let Some(sock) = stats_socket {
        let listener = admin::bind(&sock)?;
        let mode = sock.mode.map_or("umask".to_owned(), |m| format!("{m:o}"));
        out.push(format!(
            "runtime API on unix socket {} (mode {mode}, level {})",
            sock.path.display(),
            sock.level.as_str()
        ));
        let ctx = Arc::new(admin::Context {
            shared: shared.clone(),
            reloader: reloader.clone(),
            process: admin::Process {
                started,
                started_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                maxconn,
                nbthread,
                listeners: frontends.iter().map(|f| f.binds.len()).sum::<usize>()
                    + usize::from(stats_addr.is_some())
                    + 1,
            },
        });
        tokio::spawn(admin::run(listener, ctx, sock));
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "llmgw {}", env!("CARGO_PKG_VERSION"));
        for line in &out {
            let _ = writeln!(stdout, "{line}");
        }
        if embedded {
            let _ = writeln!(
                stdout,
                "serving the embedded default config: requests go to the built-in mock provider.\n\
                 To use real providers, write a config (see deploy/examples/openai-anthropic-vllm.toml) and run\n\
                 `llmgw run -c FILE`; check it first with `llmgw check -c FILE`."
            );
        }
        let _ = stdout.flush();
    }

    wait_for_signals(&shared, &reloader).await;
    Ok(())
}

/// SIGINT/SIGTERM stop the process; SIGHUP reloads the configuration file
/// (validated first; a bad one is refused and the running one stays — see
/// `llmgw::reload`, which the runtime API's `reload` shares).
async fn wait_for_signals(shared: &gateway::Shared, reloader: &reload::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                // The outcome is logged by the reloader.
                let _ = reloader.reload(shared);
            }
        }
    }
}
