//! Configuration: the compiled model and the readers that produce it.

pub mod check;
pub mod convert;
pub mod diag;
pub mod haproxy;
pub mod log;
pub mod model;
pub mod native;
pub mod stick;
pub mod units;

pub use model::*;

use std::path::Path;

pub use diag::Diags;

/// The configuration `llmgw` serves when given none.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Loads a configuration file strictly, choosing the reader by its
/// extension (warnings are dropped; see [`load_with`]).
pub fn load(path: &Path) -> Result<Config, Diags> {
    load_with(path, false).map(|(c, _)| c)
}

/// Is this an HAProxy configuration (by its `.cfg` extension)?
pub fn is_haproxy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "cfg")
}

/// Loads a configuration file: `.cfg` is the HAProxy dialect, anything else
/// the native TOML. Returns the warnings too; `lenient` relaxes the HAProxy
/// reader (see [`haproxy::Options`]).
pub fn load_with(path: &Path, lenient: bool) -> Result<(Config, Vec<diag::Diag>), Diags> {
    if is_haproxy(path) {
        haproxy::load_file(path, haproxy::Options { lenient }).map(|l| (l.config, l.warnings))
    } else {
        native::load_file(path).map(|c| (c, Vec::new()))
    }
}

/// Loads a configuration from `text` (named `name` in diagnostics): the
/// HAProxy dialect when `haproxy`, else native TOML. Relative paths in it
/// are taken from `base`. What the cluster replicates is text; this is how
/// every node reads it.
pub fn load_text(
    name: &str,
    text: &str,
    haproxy: bool,
    base: &Path,
    lenient: bool,
) -> Result<(Config, Vec<diag::Diag>), Diags> {
    if haproxy {
        haproxy::load_str(name, text, base, haproxy::Options { lenient })
            .map(|l| (l.config, l.warnings))
    } else {
        native::load_str(name, text, base).map(|c| (c, Vec::new()))
    }
}

pub fn load_embedded_default() -> Result<Config, Diags> {
    native::load_str("<embedded default>", EMBEDDED_DEFAULT, Path::new("."))
}

impl Config {
    /// Does any backend use the built-in mock provider?
    pub fn uses_builtin_mock(&self) -> bool {
        self.backends
            .iter()
            .flat_map(|b| &b.servers)
            .any(|s| s.addr == ServerAddr::BuiltinMock)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_default_is_valid() {
        let c = super::load_embedded_default().unwrap();
        assert!(c.uses_builtin_mock());
        assert_eq!(c.frontends[0].binds[0].addr.to_string(), "127.0.0.1:8080");
    }

    /// `stats socket`, `disabled` and the pool settings survive `llmgw
    /// convert`.
    #[test]
    fn convert_keeps_the_stats_socket_and_disabled_servers() {
        let cfg =
            "global\n    stats socket /run/x.sock mode 640 level admin\n    stats timeout 30s\n\
                   frontend f\n    bind 127.0.0.1:1\n    default_backend b\n\
                   backend b\n    server a 127.0.0.1:2 weight 3 disabled pool-max-conn 4 pool-purge-delay 2s pool-low-conn 3\n";
        let loaded = super::haproxy::load_str(
            "t.cfg",
            cfg,
            std::path::Path::new("."),
            super::haproxy::Options::default(),
        )
        .unwrap();
        let toml = super::convert::convert(&loaded.config, cfg);
        let back = super::native::load_str("t.toml", &toml, std::path::Path::new(".")).unwrap();
        assert_eq!(
            back.global.stats_socket, loaded.config.global.stats_socket,
            "{toml}"
        );
        let s = &back.backends[0].servers[0];
        assert_eq!((s.weight, s.opts.disabled), (3, true), "{toml}");
        assert_eq!(s.opts.pool_max_conn, Some(4), "{toml}");
        assert_eq!(
            s.opts.pool_purge_delay,
            Some(std::time::Duration::from_secs(2)),
            "{toml}"
        );
        assert_eq!(s.opts.pool_low_conn, Some(3), "{toml}");
    }
}
