//! The runtime API's commands: splitting a line into commands and words
//! the way HAProxy 2.6 does, running each, and their answers — byte for
//! byte what HAProxy prints where llmgw has the same thing (see the module
//! documentation of [`crate::admin`] for what was compared).
//!
//! Every answer is the text HAProxy prints *before* the empty line that
//! ends an answer; the session adds that line (and the prompt). HAProxy's
//! messages normally end with a newline, so an answer ends with a blank
//! line — except a few of its parse errors, which lack that newline
//! (`Empty weight string empty or preceded by garbage`): those are kept as
//! HAProxy prints them, since scripts may match them.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{AccessLevel, Balance, HashType};
use crate::gateway::Shared;
use crate::reload::Reloader;
use crate::runtime::{AdminState, Command, CommandError, ServerState};

use super::{stat, Process};

/// What a session can reach.
pub struct Context {
    pub shared: Arc<Shared>,
    pub reloader: Arc<Reloader>,
    /// The listening sockets: reloads change them, `_getsocks` hands
    /// them over, `show info` counts them.
    pub listeners: Arc<crate::listen::Listeners>,
    pub process: Process,
}

/// A session's state that commands change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub level: AccessLevel,
    /// `prompt` mode: the session stays open and prints `> ` after each
    /// answer.
    pub interactive: bool,
}

/// What one line did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineOutcome {
    /// Everything to send back: each command's answer, its closing empty
    /// line, and the prompt in interactive mode.
    pub output: String,
    /// `quit`: close the session now (nothing after it on the line runs).
    pub quit: bool,
}

/// Runs one request line (without its line feed): commands separated by
/// `;`, each answered in turn.
pub async fn run_line(ctx: &Context, sess: &mut Session, line: &str) -> LineOutcome {
    let mut out = LineOutcome::default();
    for cmd in split_commands(line) {
        let args = split_words(&cmd);
        match args.first().map(String::as_str) {
            Some("quit") => {
                out.quit = true;
                return out;
            }
            Some("prompt") => sess.interactive = !sess.interactive,
            _ => out.output.push_str(&execute(ctx, sess, &args).await),
        }
        // Every answer ends with an empty line; in interactive mode the
        // prompt follows (HAProxy prints it after each command, not once
        // per line).
        out.output.push('\n');
        if sess.interactive {
            out.output.push_str("> ");
        }
    }
    out
}

/// Splits a line at each `;` not escaped by a backslash (the backslash
/// stays, for [`split_words`] to remove). A trailing `;` leaves an empty
/// last command, which HAProxy answers as an unknown command.
pub fn split_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ';' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Splits a command into words at spaces and tabs; a backslash makes the
/// next character literal (`show\ backend` is one word) and is removed.
/// Quotes are not special (HAProxy's CLI does not treat them).
pub fn split_words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            '\\' => {
                let w = cur.get_or_insert_with(String::new);
                if let Some(n) = chars.next() {
                    w.push(n);
                }
            }
            _ => cur.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(cur);
    out
}

/// What a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ClearTable,
    DisableServer,
    EnableServer,
    GetWeight,
    Reload,
    SetMaxconnServer,
    SetServer,
    SetWeight,
    ShowActivity,
    ShowBackend,
    ShowCliLevel,
    ShowInfo,
    ShowServersState,
    ShowStat,
    ShowTable,
    ShowVersion,
}

/// A command as `help` lists it.
struct Keyword {
    words: &'static [&'static str],
    usage: &'static str,
    desc: &'static str,
    level: AccessLevel,
    op: Op,
}

/// Sorted by words, as HAProxy lists them. Usages and descriptions are
/// HAProxy's where the command is the same, and say what llmgw takes
/// where it takes less.
const KEYWORDS: &[Keyword] = &[
    Keyword {
        words: &["clear", "table"],
        usage: "clear table <table> [key <key>]",
        desc: "remove an entry from a table, or every entry",
        level: AccessLevel::Operator,
        op: Op::ClearTable,
    },
    Keyword {
        words: &["disable", "server"],
        usage: "disable server (DEPRECATED)",
        desc: "disable a server for maintenance (use 'set server' instead)",
        level: AccessLevel::Admin,
        op: Op::DisableServer,
    },
    Keyword {
        words: &["enable", "server"],
        usage: "enable server  (DEPRECATED)",
        desc: "enable a disabled server (use 'set server' instead)",
        level: AccessLevel::Admin,
        op: Op::EnableServer,
    },
    Keyword {
        words: &["get", "weight"],
        usage: "get weight <bk>/<srv>",
        desc: "report a server's current weight",
        level: AccessLevel::User,
        op: Op::GetWeight,
    },
    Keyword {
        words: &["reload"],
        usage: "reload",
        desc: "reload the configuration file (as SIGHUP does)",
        level: AccessLevel::Admin,
        op: Op::Reload,
    },
    Keyword {
        words: &["set", "maxconn", "server"],
        usage: "set maxconn server <bk>/<srv>",
        desc: "change a server's maxconn setting",
        level: AccessLevel::Admin,
        op: Op::SetMaxconnServer,
    },
    Keyword {
        words: &["set", "server"],
        usage: "set server <bk>/<srv> [opts]",
        desc: "change a server's state or weight",
        level: AccessLevel::Admin,
        op: Op::SetServer,
    },
    Keyword {
        words: &["set", "weight"],
        usage: "set weight <bk>/<srv>  (DEPRECATED)",
        desc: "change a server's weight (use 'set server' instead)",
        level: AccessLevel::Admin,
        op: Op::SetWeight,
    },
    Keyword {
        words: &["show", "activity"],
        usage: "show activity",
        desc: "show per-thread activity stats (for support/developers)",
        level: AccessLevel::User,
        op: Op::ShowActivity,
    },
    Keyword {
        words: &["show", "backend"],
        usage: "show backend",
        desc: "list backends in the current running config",
        level: AccessLevel::User,
        op: Op::ShowBackend,
    },
    Keyword {
        words: &["show", "cli", "level"],
        usage: "show cli level",
        desc: "display the level of the current CLI session",
        level: AccessLevel::User,
        op: Op::ShowCliLevel,
    },
    Keyword {
        words: &["show", "info"],
        usage: "show info",
        desc: "report information about the running process",
        level: AccessLevel::User,
        op: Op::ShowInfo,
    },
    Keyword {
        words: &["show", "servers", "state"],
        usage: "show servers state [<backend>]",
        desc: "dump volatile server information (all or for a single backend)",
        level: AccessLevel::User,
        op: Op::ShowServersState,
    },
    Keyword {
        words: &["show", "stat"],
        usage: "show stat [no-maint|up]*",
        desc: "report counters for each proxy and server",
        level: AccessLevel::User,
        op: Op::ShowStat,
    },
    Keyword {
        words: &["show", "table"],
        usage: "show table <table> [key <key>]",
        desc: "report table usage stats or dump this table's contents",
        level: AccessLevel::User,
        op: Op::ShowTable,
    },
    Keyword {
        words: &["show", "version"],
        usage: "show version",
        desc: "show version of the current process",
        level: AccessLevel::User,
        op: Op::ShowVersion,
    },
];

/// Always listed last, as HAProxy does.
const BUILTINS: &[(&str, &str)] = &[
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
];

const PERMISSION_DENIED: &str = "Permission denied\n";

/// Runs one command (not `prompt` or `quit`, which the line handles).
pub async fn execute(ctx: &Context, sess: &Session, args: &[String]) -> String {
    if args.first().map(String::as_str) == Some("help") {
        return usage(&args[1..], true);
    }
    let Some(kw) = KEYWORDS
        .iter()
        .find(|k| k.words.len() <= args.len() && k.words.iter().zip(args).all(|(w, a)| w == a))
    else {
        return usage(args, false);
    };
    if sess.level < kw.level {
        return PERMISSION_DENIED.to_owned();
    }
    let rest = &args[kw.words.len()..];
    let arg = |i: usize| rest.get(i).map(String::as_str).unwrap_or("");
    match kw.op {
        Op::ShowActivity => stat::show_activity(),
        Op::ShowInfo => stat::show_info(ctx, rest),
        Op::ShowStat => stat::show_stat(ctx, rest),
        Op::ShowServersState => stat::show_servers_state(ctx, rest.first().map(String::as_str)),
        Op::ShowBackend => stat::show_backend(ctx),
        Op::ShowTable => stat::show_table(ctx, sess.level, rest),
        Op::ShowVersion => format!("{}\n", env!("CARGO_PKG_VERSION")),
        Op::ShowCliLevel => format!("{}\n", sess.level.as_str()),
        Op::ClearTable => clear_table(ctx, rest),
        Op::GetWeight => match find_server(ctx, arg(0)) {
            Ok(s) => format!("{} (initial {})\n", s.weight(), s.initial_weight()),
            Err(e) => e,
        },
        Op::DisableServer => server_state(ctx, arg(0), AdminState::Maint),
        Op::EnableServer => match find_server(ctx, arg(0)) {
            Ok(s) => apply(
                ctx,
                Command::EnableServer {
                    backend: s.backend.clone(),
                    server: s.name.clone(),
                },
            ),
            Err(e) => e,
        },
        Op::SetServer => set_server(ctx, rest),
        Op::SetWeight => set_weight(ctx, arg(0), arg(1)),
        Op::SetMaxconnServer => set_maxconn(ctx, arg(0), arg(1)),
        Op::Reload => reload(ctx).await,
    }
}

/// Applies a command to the runtime state: the same [`Command`] the
/// cluster will carry. An empty answer is success, as in HAProxy.
fn apply(ctx: &Context, cmd: Command) -> String {
    match ctx.shared.runtime.apply(&cmd) {
        Ok(()) => String::new(),
        // A reload removed it between the lookup and now.
        Err(CommandError::NoSuchBackend(_)) => "No such backend.\n".into(),
        Err(CommandError::NoSuchServer(_)) => "No such server.\n".into(),
        Err(CommandError::NoSuchTable(_)) => "No such table\n".into(),
        Err(CommandError::InvalidKey(_)) => "Invalid key\n".into(),
    }
}

/// `backend/server` of the running configuration, or HAProxy's message.
fn find_server(ctx: &Context, spec: &str) -> Result<Arc<ServerState>, String> {
    let Some((b, s)) = spec.split_once('/') else {
        return Err("Require 'backend/server'.\n".into());
    };
    let snap = ctx.shared.current.load();
    let Some(bi) = snap.config.backends.iter().position(|be| be.name == b) else {
        return Err("No such backend.\n".into());
    };
    let Some(si) = snap.config.backends[bi]
        .servers
        .iter()
        .position(|sv| sv.name == s)
    else {
        return Err("No such server.\n".into());
    };
    Ok(snap.backends[bi].balancer.server(si).clone())
}

fn server_state(ctx: &Context, spec: &str, state: AdminState) -> String {
    match find_server(ctx, spec) {
        Ok(s) => apply(
            ctx,
            Command::SetServerState {
                backend: s.backend.clone(),
                server: s.name.clone(),
                state,
            },
        ),
        Err(e) => e,
    }
}

/// `set server B/S state ready|drain|maint` and `set server B/S weight N[%]`.
fn set_server(ctx: &Context, rest: &[String]) -> String {
    let arg = |i: usize| rest.get(i).map(String::as_str).unwrap_or("");
    let s = match find_server(ctx, arg(0)) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match arg(1) {
        "state" => {
            let state = match arg(2) {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                _ => {
                    return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
                        .into()
                }
            };
            apply(
                ctx,
                Command::SetServerState {
                    backend: s.backend.clone(),
                    server: s.name.clone(),
                    state,
                },
            )
        }
        "weight" => weight_change(ctx, &s, arg(2)),
        other @ ("addr" | "agent" | "agent-addr" | "agent-port" | "agent-send" | "check-addr"
        | "check-port" | "fqdn" | "health" | "ssl") => {
            format!(
                "'set server <srv> {other}' is not supported by llmgw (state and weight are).\n"
            )
        }
        _ => "usage: set server <backend>/<server> state | weight\n".into(),
    }
}

fn set_weight(ctx: &Context, spec: &str, weight: &str) -> String {
    match find_server(ctx, spec) {
        Ok(s) => weight_change(ctx, &s, weight),
        Err(e) => e,
    }
}

/// C's `strtol` in base 10: the value (saturated) and what follows the
/// number; `None` when no digits start the text (after blanks and a
/// sign). HAProxy parses weights and maxconn with it, and its messages
/// depend on where the number ends.
pub(crate) fn strtol(s: &str) -> (Option<i64>, &str) {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return (None, s);
    }
    let mut v: i64 = 0;
    for d in digits[..end].bytes() {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    (Some(if neg { -v } else { v }), &digits[end..])
}

/// HAProxy's `server_parse_weight_change_request`: `N` (0..=256) or `N%`
/// of the configured weight, with its messages.
fn weight_change(ctx: &Context, s: &ServerState, text: &str) -> String {
    if text.is_empty() {
        return "Require <weight> or <weight%>.\n".into();
    }
    let initial = s.initial_weight();
    let (cmd, w) = match strtol(text) {
        (None, _) => return "Empty weight string empty or preceded by garbage".into(),
        (Some(w), "%") => {
            if w < 0 {
                return "Relative weight must be positive.\n".into();
            }
            let percent = w.min(25_600) as u32;
            let new = (u64::from(initial) * u64::from(percent) / 100).min(256) as u32;
            (
                Command::SetServerWeightPercent {
                    backend: s.backend.clone(),
                    server: s.name.clone(),
                    percent,
                },
                new,
            )
        }
        (Some(w), _) if !(0..=256).contains(&w) => {
            return "Absolute weight can only be between 0 and 256 inclusive.\n".into()
        }
        (Some(_), rest) if !rest.is_empty() => return "Trailing garbage in weight string".into(),
        (Some(w), _) => (
            Command::SetServerWeight {
                backend: s.backend.clone(),
                server: s.name.clone(),
                weight: w as u32,
            },
            w as u32,
        ),
    };
    // Static algorithms place requests by the configured weights: a
    // runtime weight can only take a server out (0) or put it back.
    if w != 0 && w != initial && is_static(ctx, &s.backend) {
        return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n"
            .into();
    }
    apply(ctx, cmd)
}

/// Does the backend's algorithm ignore runtime weights (HAProxy's
/// non-dynamic algorithms)? `static-rr`, and hashes onto the map of
/// configured weights.
fn is_static(ctx: &Context, backend: &str) -> bool {
    let snap = ctx.shared.current.load();
    snap.config
        .backends
        .iter()
        .find(|b| b.name == backend)
        .is_some_and(|b| match b.balance {
            Balance::StaticRr => true,
            Balance::Source | Balance::Uri | Balance::Hdr(_) => b.hash_type == HashType::MapBased,
            _ => false,
        })
}

fn set_maxconn(ctx: &Context, spec: &str, text: &str) -> String {
    let s = match find_server(ctx, spec) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if text.is_empty() {
        return "Require <maxconn>.\n".into();
    }
    let maxconn = match strtol(text) {
        (None, _) => return "maxconn string empty or preceded by garbage".into(),
        (Some(_), rest) if !rest.is_empty() => return "Trailing garbage in maxconn string".into(),
        // HAProxy stores a negative value as is; it means nothing, so it
        // is refused here.
        (Some(n), _) if n < 0 => return "Maxconn must be 0 (no limit) or more.\n".into(),
        (Some(n), _) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    apply(
        ctx,
        Command::SetServerMaxconn {
            backend: s.backend.clone(),
            server: s.name.clone(),
            maxconn,
        },
    )
}

/// `clear table T [key K]`.
fn clear_table(ctx: &Context, rest: &[String]) -> String {
    let Some(name) = rest.first() else {
        return "Required arguments: <table> or <table> key <key>\n".into();
    };
    if stat::find_table(ctx, name).is_none() {
        return "No such table\n".into();
    }
    let key = match rest.get(1).map(String::as_str) {
        None => None,
        Some("key") => match rest.get(2) {
            Some(k) => Some(k.clone()),
            None => return "Key value expected\n".into(),
        },
        Some(_) => return "Optional argument only supports key <key>\n".into(),
    };
    apply(
        ctx,
        Command::ClearTable {
            table: name.clone(),
            key,
        },
    )
}

/// `reload`: the SIGHUP path ([`Reloader`]), answered in the format of
/// HAProxy's master CLI `reload` (2.7 on): `Success=1|0`, a `--` line,
/// then the messages.
async fn reload(ctx: &Context) -> String {
    let (shared, reloader, listeners) = (
        ctx.shared.clone(),
        ctx.reloader.clone(),
        ctx.listeners.clone(),
    );
    // Reading and compiling the file is blocking work: off the runtime's
    // workers, so that traffic on them is not held up.
    let result = tokio::task::spawn_blocking(move || reloader.reload(&shared, &listeners))
        .await
        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
    let mut out = String::new();
    match result {
        Ok(warnings) => {
            out.push_str("Success=1\n--\n");
            for w in warnings {
                for l in w.lines() {
                    let _ = writeln!(out, "[WARNING] {l}");
                }
            }
        }
        Err(e) => {
            out.push_str("Success=0\n--\n");
            for l in e.lines() {
                let _ = writeln!(out, "[ALERT] {l}");
            }
        }
    }
    out
}

/// `help [words]` and the answer to an unknown command: HAProxy 2.6's
/// `cli_gen_usage_msg`. The words that exactly start some command select
/// the commands that start with them; a further word that starts none is
/// matched by spelling (HAProxy's character-transition fingerprints:
/// kept when the distance is under 5/2 of the words' total length, at
/// most five, none worse than 5/2 of the best), and the list is sorted by
/// its text; `help`, `prompt` and `quit` always close it.
pub fn usage(args: &[String], help: bool) -> String {
    let prefix = |k: &Keyword, n: usize| {
        k.words.len() >= n && args.len() >= n && k.words[..n].iter().zip(args).all(|(w, a)| w == a)
    };
    let length = KEYWORDS
        .iter()
        .map(|k| {
            k.words
                .iter()
                .zip(args)
                .take_while(|(w, a)| *w == a)
                .count()
        })
        .max()
        .unwrap_or(0);
    let mut out = String::from(if help {
        "The following commands are valid at this level:\n"
    } else if length == 0 && args.first().is_none_or(|a| a.is_empty()) {
        "Unknown command. Please enter one of the following commands only:\n"
    } else {
        "Unknown command, but maybe one of the following ones is a better match:\n"
    });
    const MAX_MATCHES: usize = 5;
    // HAProxy compares at most this many words of a command.
    const PREFIX_WORDS: usize = 5;
    let mut matches: Vec<(usize, &Keyword)> = Vec::new();
    if args.get(length).is_some_and(|a| !a.is_empty()) {
        let typed: Vec<&str> = args[length..]
            .iter()
            .take(PREFIX_WORDS.saturating_sub(length))
            .take_while(|a| !a.is_empty())
            .map(String::as_str)
            .collect();
        for k in KEYWORDS.iter().filter(|k| prefix(k, length)) {
            let theirs = &k.words[length..];
            let totlen: usize = typed.iter().chain(theirs).map(|w| w.len()).sum();
            let dist = fingerprint(&typed).distance(&fingerprint(theirs));
            if dist >= 5 * totlen / 2 {
                continue;
            }
            if matches.len() < MAX_MATCHES {
                matches.push((dist, k));
            } else if dist < matches[MAX_MATCHES - 1].0 {
                matches[MAX_MATCHES - 1] = (dist, k);
            } else {
                continue;
            }
            // The best first; on a tie the earlier command stays ahead.
            matches.sort_by_key(|m| m.0);
        }
    }
    let mut entries: Vec<String> = match matches.first() {
        // Candidates by spelling, those not much worse than the best.
        Some(&(best, _)) => matches
            .iter()
            .take_while(|(dist, _)| *dist <= 5 * best / 2)
            .map(|(_, k)| entry(k))
            .collect(),
        None => KEYWORDS
            .iter()
            .filter(|k| prefix(k, length))
            .map(entry)
            .collect(),
    };
    // Listed in the order of their text, as HAProxy sorts them.
    entries.sort();
    for e in entries {
        out.push_str(&e);
    }
    for (usage, desc) in BUILTINS {
        let _ = writeln!(out, "  {usage:<40}: {desc}");
    }
    out
}

/// A command's help line.
fn entry(k: &Keyword) -> String {
    format!("  {:<40}: {}\n", k.usage, k.desc)
}

/// HAProxy's word fingerprint: counts of transitions between character
/// classes (letters, digits, other, word start and end) over the words.
struct Fingerprint([u8; 1024]);

fn fingerprint(words: &[&str]) -> Fingerprint {
    let mut fp = [0u8; 1024];
    for w in words {
        let mut from = 28;
        for c in w.bytes() {
            let to = match c.to_ascii_lowercase() {
                c @ b'a'..=b'z' => usize::from(c - b'a' + 1),
                b'0'..=b'9' => 27,
                _ => 28,
            };
            fp[to] = 1;
            // A C `uint8_t` counter: it wraps.
            fp[32 * from + to] = fp[32 * from + to].wrapping_add(1);
            from = to;
        }
        fp[32 * from + 28] = fp[32 * from + 28].wrapping_add(1);
    }
    Fingerprint(fp)
}

impl Fingerprint {
    fn distance(&self, other: &Fingerprint) -> usize {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| usize::from(a.abs_diff(*b)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s)
    }

    #[test]
    fn lines_split_like_haproxy() {
        assert_eq!(
            split_commands("show stat;show backend"),
            ["show stat", "show backend"]
        );
        // A trailing `;` is an empty last command.
        assert_eq!(split_commands("show backend;"), ["show backend", ""]);
        // An escaped `;` is part of a word.
        assert_eq!(split_commands(r"show table st\;x"), [r"show table st\;x"]);
        assert_eq!(words(r"show table st\;x"), ["show", "table", "st;x"]);
        assert_eq!(words("  show \t backend  "), ["show", "backend"]);
        assert_eq!(words(r"show\ backend"), ["show backend"]);
        assert_eq!(words(r"show back\end\"), ["show", "backend"]);
        // Quotes are literal.
        assert_eq!(words("show table 'st'"), ["show", "table", "'st'"]);
        assert!(words("").is_empty());
    }

    #[test]
    fn strtol_reads_like_c() {
        assert_eq!(strtol("50%"), (Some(50), "%"));
        assert_eq!(strtol(" -5%"), (Some(-5), "%"));
        assert_eq!(strtol("+7"), (Some(7), ""));
        assert_eq!(strtol("10abc"), (Some(10), "abc"));
        assert_eq!(strtol("abc"), (None, "abc"));
        assert_eq!(strtol("-"), (None, "-"));
        assert_eq!(strtol("99999999999999999999999"), (Some(i64::MAX), ""));
    }

    /// HAProxy 2.6's framing of `help`: two spaces, the usage padded to
    /// 40 columns, `: `, the description; `help`, `prompt`, `quit` last.
    #[test]
    fn help_lists_every_command_then_the_builtins() {
        let h = usage(&[], true);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], "The following commands are valid at this level:");
        assert_eq!(
            lines[1],
            "  clear table <table> [key <key>]         : remove an entry from a table, or every entry"
        );
        assert!(lines.contains(
            &"  disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)"
        ));
        assert_eq!(
            &lines[lines.len() - 3..],
            [
                "  help [<command>]                        : list matching or all commands",
                "  prompt                                  : toggle interactive mode with prompt",
                "  quit                                    : disconnect",
            ]
        );
        assert_eq!(lines.len(), 1 + KEYWORDS.len() + 3);
        // Listed in order of their words.
        let mut sorted: Vec<_> = KEYWORDS.iter().map(|k| k.words.join(" ")).collect();
        sorted.sort();
        assert_eq!(
            sorted,
            KEYWORDS
                .iter()
                .map(|k| k.words.join(" "))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_commands_propose_what_is_near() {
        // Nothing typed: everything.
        let u = usage(&words(""), false);
        assert!(
            u.starts_with("Unknown command. Please enter one of the following commands only:\n")
        );
        assert_eq!(u.lines().count(), 1 + KEYWORDS.len() + 3);
        // Known first words: every command starting with them.
        let u = usage(&words("show servers"), false);
        assert_eq!(
            u,
            "Unknown command, but maybe one of the following ones is a better match:\n\
             \x20 show servers state [<backend>]          : dump volatile server information (all or for a single backend)\n\
             \x20 help [<command>]                        : list matching or all commands\n\
             \x20 prompt                                  : toggle interactive mode with prompt\n\
             \x20 quit                                    : disconnect\n"
        );
        let u = usage(&words("show"), false);
        assert_eq!(u.lines().filter(|l| l.starts_with("  show ")).count(), 8);
        // Misspelt: by spelling (HAProxy proposes `show backend` for
        // `SHOW BACKEND` too), sorted by text.
        let near = |typed: &str| -> Vec<String> {
            usage(&words(typed), false)
                .lines()
                .skip(1)
                .map(|l| l.split(':').next().unwrap_or("").trim().to_owned())
                .collect()
        };
        let u = near("SHOW BACKEND");
        assert!(u.contains(&"show backend".to_owned()), "{u:?}");
        let u = near("show tabel");
        assert!(
            u.contains(&"show table <table> [key <key>]".to_owned()),
            "{u:?}"
        );
        assert!(u.len() <= 5 + 3, "{u:?}");
        let mut sorted = u[..u.len() - 3].to_vec();
        sorted.sort();
        assert_eq!(sorted, u[..u.len() - 3]);
        // `help show` lists the show commands under help's own heading.
        let u = usage(&words("show"), true);
        assert!(u.starts_with("The following commands are valid at this level:\n  show activity"));
    }
}
