//! Reloading the configuration file: `SIGHUP` and the runtime API's
//! `reload` command take this one path, so they validate, swap and refuse
//! alike.
//!
//! A reload reads the file again (the reader chosen by its extension, as at
//! start), applies the command line's overrides (`--bind`, `--stats`) so a
//! reload does not undo them, and hands the result to
//! [`Shared::swap`](crate::gateway::Shared::swap): the new snapshot is
//! built whole and swapped in atomically, runtime state carries over by
//! name. A configuration with any error is refused and the running one
//! stays. Listeners follow the configuration ([`crate::listen::set`]):
//! kept addresses keep accepting, new ones are bound *before* the swap (an
//! address that cannot be bound refuses the reload), removed ones drain.
//! Only the runtime API socket and the serving threads (`nbthread`) are
//! set up once, at start: a reload that changes them says that this needs
//! a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{self, Bind, Config};
use crate::gateway::Shared;
use crate::listen::Listeners;

/// What the command line changes in every configuration served.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`: replaces the first frontend's addresses (TLS and PROXY
    /// settings are taken from its first bind).
    pub bind: Vec<SocketAddr>,
    /// `--stats`: the stats listener's address.
    pub stats: Option<SocketAddr>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) -> Result<(), String> {
        if !self.bind.is_empty() {
            let Some(fe) = cfg.frontends.first_mut() else {
                return Err("--bind: the configuration has no frontend".into());
            };
            let template = fe.binds.first().cloned();
            fe.binds = self
                .bind
                .iter()
                .map(|&addr| Bind {
                    addr,
                    tls: template.as_ref().and_then(|t| t.tls.clone()),
                    accept_proxy: template.as_ref().is_some_and(|t| t.accept_proxy),
                })
                .collect();
        }
        if let Some(s) = self.stats {
            cfg.global.stats = Some(s);
        }
        Ok(())
    }
}

/// Reloads the file a gateway was started with.
/// Where a reload's configuration goes on a cluster member: to the
/// cluster, which decides it and hands it back to every node (this one
/// included) through [`Reloader::apply_committed`].
pub trait ConfigProposer: Send + Sync {
    /// Proposes a validated configuration text (`haproxy`: in the HAProxy
    /// dialect) and returns once this node applied it: its version, or why
    /// the cluster did not take it.
    fn propose(&self, name: &str, text: String, haproxy: bool) -> Result<u64, String>;
}

/// Reloads the file a gateway was started with.
pub struct Reloader {
    /// `None`: serving the embedded default, nothing to reload.
    path: Option<PathBuf>,
    lenient: bool,
    overrides: Overrides,
    /// Set once the node has joined its cluster: reloads then go through it.
    cluster: std::sync::OnceLock<Arc<dyn ConfigProposer>>,
    /// One swap at a time: a signal and a socket command arriving together
    /// would otherwise race to store their snapshots. Held only while
    /// building and swapping, never across an `.await` nor while a proposal
    /// waits for the cluster (whose answer is itself a swap).
    swapping: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("clustered", &self.cluster.get().is_some())
            .finish()
    }
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, lenient: bool, overrides: Overrides) -> Reloader {
        Reloader {
            path,
            lenient,
            overrides,
            cluster: std::sync::OnceLock::new(),
            swapping: Mutex::new(()),
        }
    }

    /// From now on, reloads are proposed to `cluster`.
    pub fn join_cluster(&self, cluster: Arc<dyn ConfigProposer>) {
        let _ = self.cluster.set(cluster);
    }

    /// The file served, if any (the embedded default has none).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Where relative paths in a configuration text are taken from: the
    /// file's directory, else the working directory.
    pub fn base(&self) -> PathBuf {
        self.path
            .as_deref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), ToOwned::to_owned)
    }

    /// Reads and validates the configuration file, then puts it in force:
    /// on a cluster member by proposing it to the cluster (every node then
    /// applies it), else by swapping it in here. `Ok` carries the warnings
    /// (the reader's, and changes that need a restart); `Err` every reason
    /// the file was refused — the running configuration then stays. Both
    /// are logged here, so every caller logs alike.
    pub fn reload(&self, shared: &Shared, listeners: &Listeners) -> Result<Vec<String>, String> {
        let result = self.load_and_swap(shared, listeners);
        match &result {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!("reload: {w}");
                }
                // On a cluster member the change is logged where every
                // committed configuration is put in force.
                if self.cluster.get().is_none() {
                    tracing::info!("configuration reloaded");
                }
            }
            Err(e) => tracing::error!("reload refused, the running configuration stays:\n{e}"),
        }
        result
    }

    fn load_and_swap(&self, shared: &Shared, listeners: &Listeners) -> Result<Vec<String>, String> {
        let Some(path) = &self.path else {
            return Err("serving the embedded default configuration: there is no file to reload (start with `llmgw run -c FILE`)".into());
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
        let haproxy = config::is_haproxy(path);
        let (mut new, diags) = config::load_text(&name, &text, haproxy, &self.base(), self.lenient)
            .map_err(|diags| diags.to_string())?;
        self.overrides.apply(&mut new)?;
        let mut warnings: Vec<String> = diags.iter().map(ToString::to_string).collect();
        warnings.extend(restart_only_changes(&shared.current.load().config, &new));
        match self.cluster.get() {
            Some(cluster) => {
                cluster.propose(&name, text, haproxy)?;
            }
            None => self.swap_in(new, shared, listeners)?,
        }
        Ok(warnings)
    }

    /// Puts in force a configuration the cluster committed (`name` is what
    /// its diagnostics call it). A text this node cannot load — a
    /// certificate file missing here, say — is refused here only, with its
    /// reasons, and the running configuration stays.
    pub fn apply_committed(
        &self,
        name: &str,
        text: &str,
        haproxy: bool,
        shared: &Shared,
        listeners: &Listeners,
    ) -> Result<Vec<String>, String> {
        let (mut new, diags) = config::load_text(name, text, haproxy, &self.base(), self.lenient)
            .map_err(|diags| diags.to_string())?;
        self.overrides.apply(&mut new)?;
        let mut warnings: Vec<String> = diags.iter().map(ToString::to_string).collect();
        warnings.extend(restart_only_changes(&shared.current.load().config, &new));
        self.swap_in(new, shared, listeners)?;
        Ok(warnings)
    }

    /// Binds the new addresses, swaps the snapshot, then puts the
    /// listeners in step (see [`crate::listen::set`]).
    fn swap_in(&self, new: Config, shared: &Shared, listeners: &Listeners) -> Result<(), String> {
        let _one = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        // New addresses are bound first: one that cannot be refuses the
        // reload before anything changed.
        let prepared = listeners.prepare(&new)?;
        shared.swap(new)?;
        let changes = listeners.commit(prepared);
        if !changes.is_empty() {
            // As at start: on stdout, where the listening lines are.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for c in &changes {
                tracing::info!("reload: {c}");
                let _ = writeln!(out, "{c}");
            }
            let _ = out.flush();
        }
        Ok(())
    }
}

/// What a reload cannot change in a running process.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.global.stats_socket != new.global.stats_socket {
        out.push(
            "stats socket changes need a restart (or a binary upgrade: llmgw run -x)".to_owned(),
        );
    }
    if old.global.nbthread != new.global.nbthread {
        out.push(format!(
            "nbthread changes need a restart (or a binary upgrade: llmgw run -x); serving threads stay at {}",
            crate::threads::count()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, text: &str) -> PathBuf {
        let p = dir.join("llmgw.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    const CFG: &str = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
                       [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n";

    #[tokio::test]
    async fn good_then_bad_then_none() {
        let dir = std::env::temp_dir().join(format!("llmgw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = write(&dir, CFG);
        let cfg = config::load(&path).expect("valid");
        let shared = Shared::new(cfg, None).expect("shared");
        let slots = Arc::new(tokio::sync::Semaphore::new(100));
        let listeners = Listeners::new(shared.clone(), slots, Vec::new());
        let first = listeners
            .prepare(&shared.current.load().config)
            .expect("bind");
        assert_eq!(listeners.commit(first).len(), 1);
        let r = Reloader::new(Some(path.clone()), false, Overrides::default());

        // The same file again: nothing needs a restart, nothing rebinds.
        assert_eq!(r.reload(&shared, &listeners), Ok(vec![]));
        assert_eq!(listeners.count(), 1);

        // A new server is picked up.
        write(
            &dir,
            &format!("{CFG}[[backend.server]]\nname = \"t\"\naddress = \"127.0.0.1:10\"\n"),
        );
        assert_eq!(r.reload(&shared, &listeners), Ok(vec![]));
        assert_eq!(shared.current.load().config.backends[0].servers.len(), 2);

        // The number of threads is fixed at start: the rest of a file that
        // changes it is taken, with a warning, both ways.
        let two_servers =
            format!("{CFG}[[backend.server]]\nname = \"t\"\naddress = \"127.0.0.1:10\"\n");
        let threads_warning = "nbthread changes need a restart (or a binary upgrade: llmgw run -x); serving threads stay at 1";
        write(&dir, &format!("[global]\nnbthread = 3\n{two_servers}"));
        assert_eq!(
            r.reload(&shared, &listeners),
            Ok(vec![threads_warning.to_owned()])
        );
        assert_eq!(shared.current.load().config.global.nbthread, 3);
        write(&dir, &two_servers);
        assert_eq!(
            r.reload(&shared, &listeners),
            Ok(vec![threads_warning.to_owned()])
        );

        // A broken file is refused with its diagnostics; the running one stays.
        write(&dir, "[[backend]]\nname = \"b\"\nbalance = \"nope\"\n");
        let e = r.reload(&shared, &listeners).unwrap_err();
        assert!(e.contains("llmgw.toml:"), "{e}");
        assert_eq!(shared.current.load().config.backends[0].servers.len(), 2);

        // A second bind is opened, then closed again.
        let two = CFG.replace("\"127.0.0.1:0\"]", "\"127.0.0.1:0\", \"127.0.0.2:0\"]");
        write(&dir, &two);
        assert_eq!(r.reload(&shared, &listeners), Ok(vec![]));
        assert_eq!(listeners.count(), 2);
        write(&dir, CFG);
        assert_eq!(r.reload(&shared, &listeners), Ok(vec![]));
        assert_eq!(listeners.count(), 1);

        // An address that cannot be bound refuses the whole reload.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let moved = format!("{CFG}[[backend.server]]\nname = \"t\"\naddress = \"127.0.0.1:10\"\n")
            .replace("127.0.0.1:0", &addr.to_string());
        write(&dir, &moved);
        let e = r.reload(&shared, &listeners).unwrap_err();
        assert!(e.contains(&format!("cannot bind {addr}")), "{e}");
        assert_eq!(shared.current.load().config.backends[0].servers.len(), 1);
        assert_eq!(listeners.count(), 1);

        // `--bind` is kept across reloads: no listener change then.
        let o = Overrides {
            bind: vec!["127.0.0.1:0".parse().expect("addr")],
            stats: None,
        };
        let r = Reloader::new(Some(path), false, o);
        assert_eq!(r.reload(&shared, &listeners), Ok(vec![]));
        assert_eq!(listeners.count(), 1);

        let none = Reloader::new(None, false, Overrides::default());
        assert!(none
            .reload(&shared, &listeners)
            .unwrap_err()
            .contains("embedded default"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
