use std::path::Path;

use super::*;
use crate::config::haproxy;
use crate::gateway::Shared;
use crate::reload::{Overrides, Reloader};
use crate::runtime::AdminState;
use crate::stick::{Data, Key};

const CFG: &str = "global
    maxconn 1000
frontend f
    bind 127.0.0.1:0
    maxconn 50
    http-request track-sc0 req.hdr(x-user) table users
    default_backend b
backend b
    balance roundrobin
    server s1 127.0.0.1:9001 weight 10 maxconn 5 maxqueue 7
    server s2 127.0.0.1:9002 weight 20 check inter 1h
    server s3 127.0.0.1:9003 backup
    server s4 127.0.0.1:9004 disabled
backend users
    stick-table type string size 1k expire 30s store http_req_rate(10s),conn_cur,gpc0
backend st
    balance static-rr
    server a 127.0.0.1:9005 weight 3
";

fn ctx_with(cfg: &str, level: AccessLevel) -> (Context, Session) {
    let config = haproxy::load_str("t.cfg", cfg, Path::new("."), haproxy::Options::default())
        .expect("valid config")
        .config;
    let shared = Shared::new(config, None).expect("shared");
    let listeners = Arc::new(crate::listen::Listeners::new(
        shared.clone(),
        Arc::new(tokio::sync::Semaphore::new(1)),
        Vec::new(),
    ));
    let ctx = Context {
        shared,
        reloader: Arc::new(Reloader::new(None, false, Overrides::default())),
        listeners,
        process: Process {
            started: Instant::now(),
            started_unix: 1_700_000_000,
            maxconn: 1000,
            nbthread: 2,
        },
    };
    let sess = Session {
        level,
        interactive: false,
    };
    (ctx, sess)
}

fn ctx() -> (Context, Session) {
    ctx_with(CFG, AccessLevel::Admin)
}

async fn say(ctx: &Context, sess: &mut Session, line: &str) -> String {
    run_line(ctx, sess, line).await.output
}

fn server(ctx: &Context, b: &str, s: &str) -> Arc<crate::runtime::ServerState> {
    let snap = ctx.shared.current.load();
    let bi = snap
        .config
        .backends
        .iter()
        .position(|x| x.name == b)
        .expect("backend");
    let si = snap.config.backends[bi]
        .servers
        .iter()
        .position(|x| x.name == s)
        .expect("server");
    snap.backends[bi].balancer.server(si).clone()
}

/// The CSV row of `px/sv`, as a map of HAProxy's field names.
fn stat_row(csv: &str, px: &str, sv: &str) -> std::collections::HashMap<&'static str, String> {
    let line = csv
        .lines()
        .find(|l| l.starts_with(&format!("{px},{sv},")))
        .unwrap_or_else(|| panic!("no row {px},{sv} in\n{csv}"));
    let vals: Vec<&str> = line.split(',').collect();
    // One value per field, then the trailing comma's empty remainder.
    assert_eq!(vals.len(), STAT_FIELDS.len() + 1, "{line}");
    assert_eq!(vals.last(), Some(&""));
    STAT_FIELDS
        .iter()
        .zip(vals)
        .map(|(f, v)| (*f, v.to_owned()))
        .collect()
}

/// HAProxy 2.6.12's header, as `show stat` printed it (the e2e test
/// compares with the installed HAProxy too).
const HAPROXY_26_HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n";

#[tokio::test]
async fn show_stat_rows_in_haproxy_order_and_meaning() {
    let (ctx, mut sess) = ctx();
    let s1 = server(&ctx, "b", "s1");
    let g = s1.begin();
    s1.count_retry(true);
    let out = say(&ctx, &mut sess, "show stat").await;
    drop(g);
    assert!(out.starts_with(HAPROXY_26_HEADER), "{out}");
    // The answer, then the empty line that ends it.
    assert!(out.ends_with(",\n\n"), "{out:?}");
    let rows: Vec<String> = out
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        rows,
        [
            "f,FRONTEND",
            "b,s1",
            "b,s2",
            "b,s3",
            "b,s4",
            "b,BACKEND",
            // A section holding only a stick table is a backend, as in
            // HAProxy.
            "users,BACKEND",
            "st,a",
            "st,BACKEND"
        ]
    );

    let fe = stat_row(&out, "f", "FRONTEND");
    assert_eq!(
        (
            fe["slim"].as_str(),
            fe["status"].as_str(),
            fe["iid"].as_str(),
            fe["sid"].as_str(),
            fe["type"].as_str(),
            fe["mode"].as_str(),
            fe["pid"].as_str(),
        ),
        ("50", "OPEN", "2", "0", "0", "http", "1")
    );
    // Traffic counters from `crate::metrics`; nothing made up: what llmgw
    // does not count (rates, all-bytes totals) is empty.
    for (f, v) in [
        ("stot", "0"),
        ("req_tot", "0"),
        ("hrsp_2xx", "0"),
        ("dcon", "0"),
    ] {
        assert_eq!(fe[f], v, "frontend {f}");
    }
    for f in [
        "bin",
        "bout",
        "rate",
        "rate_max",
        "cookie",
        "ssl_sess",
        "h1_bytes_in",
    ] {
        assert_eq!(fe[f], "", "frontend {f}");
    }
    assert_eq!(fe["-"], "-");

    let r = stat_row(&out, "b", "s1");
    for (f, v) in [
        ("scur", "1"),
        ("slim", "5"),
        ("stot", "1"),
        ("lbtot", "1"),
        ("wretr", "1"),
        ("wredis", "1"),
        ("status", "no check"),
        ("weight", "10"),
        ("uweight", "10"),
        ("act", "1"),
        ("bck", "0"),
        ("qlimit", "7"),
        ("iid", "3"),
        ("sid", "1"),
        ("type", "2"),
        ("addr", "127.0.0.1:9001"),
        ("mode", "http"),
        ("chkfail", ""),
        ("check_status", ""),
    ] {
        assert_eq!(r[f], v, "s1 {f}");
    }
    let r = stat_row(&out, "b", "s2");
    for (f, v) in [
        // Not checked yet: up, and down at the first failure (as HAProxy).
        ("status", "UP 1/3"),
        ("check_health", "2"),
        ("check_status", "INI"),
        ("check_code", ""),
        ("check_duration", ""),
        ("check_desc", "Initializing"),
        ("check_rise", "2"),
        ("check_fall", "3"),
        ("chkfail", "0"),
        ("chkdown", "0"),
    ] {
        assert_eq!(r[f], v, "s2 {f}");
    }
    assert_eq!(
        (
            stat_row(&out, "b", "s3")["act"].as_str(),
            stat_row(&out, "b", "s3")["bck"].as_str()
        ),
        ("0", "1")
    );
    // `disabled` starts in maintenance.
    assert_eq!(stat_row(&out, "b", "s4")["status"], "MAINT");
    let be = stat_row(&out, "b", "BACKEND");
    for (f, v) in [
        ("status", "UP"),
        // s1 and s2 are usable; s4 is in maintenance, s3 is a backup.
        ("weight", "30"),
        ("act", "2"),
        ("bck", "1"),
        ("qcur", "0"),
        ("qmax", "0"),
        // Sessions of a backend are requests given to it (none went
        // through a frontend here); the server's own count is its own.
        ("scur", "0"),
        ("stot", "0"),
        ("lbtot", "1"),
        ("wretr", "1"),
        ("type", "1"),
        ("algo", "roundrobin"),
        ("sid", "0"),
    ] {
        assert_eq!(be[f], v, "backend {f}");
    }
}

#[tokio::test]
async fn show_stat_filters_like_haproxy() {
    let (ctx, mut sess) = ctx();
    let names = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(
        names(&say(&ctx, &mut sess, "show stat b 4 -1").await),
        ["b,s1", "b,s2", "b,s3", "b,s4"]
    );
    assert_eq!(
        names(&say(&ctx, &mut sess, "show stat -1 2 -1").await),
        ["b,BACKEND", "users,BACKEND", "st,BACKEND"]
    );
    assert_eq!(
        names(&say(&ctx, &mut sess, "show stat 3 4 2").await),
        ["b,s2"]
    );
    // Fewer than three words: no filter.
    assert_eq!(names(&say(&ctx, &mut sess, "show stat b 4").await).len(), 9);
    assert_eq!(
        say(&ctx, &mut sess, "show stat nope 4 -1").await,
        "No such proxy.\n\n"
    );
    // `up` hides what is down or in maintenance and counts what runs.
    server(&ctx, "b", "s2").set_up(false);
    let out = say(&ctx, &mut sess, "show stat up").await;
    assert!(!names(&out).contains(&"b,s2".to_owned()), "{out}");
    assert!(!names(&out).contains(&"b,s4".to_owned()), "{out}");
    assert_eq!(stat_row(&out, "b", "BACKEND")["status"], "UP (2/4)");
    let out = say(&ctx, &mut sess, "show stat no-maint").await;
    assert!(names(&out).contains(&"b,s2".to_owned()), "{out}");
    assert!(!names(&out).contains(&"b,s4".to_owned()), "{out}");
}

#[tokio::test]
async fn server_states_and_their_messages() {
    let (ctx, mut sess) = ctx();
    let s1 = server(&ctx, "b", "s1");
    assert_eq!(
        say(&ctx, &mut sess, "set server b/s1 state drain").await,
        "\n"
    );
    assert_eq!(s1.admin(), AdminState::Drain);
    let out = say(&ctx, &mut sess, "show stat").await;
    assert_eq!(stat_row(&out, "b", "s1")["status"], "DRAIN");
    assert_eq!(
        say(&ctx, &mut sess, "set server b/s1 state maint").await,
        "\n"
    );
    assert_eq!(s1.admin(), AdminState::Maint);
    assert_eq!(
        say(&ctx, &mut sess, "set server b/s1 state ready").await,
        "\n"
    );
    assert_eq!(s1.admin(), AdminState::Ready);
    assert_eq!(say(&ctx, &mut sess, "disable server b/s1").await, "\n");
    assert_eq!(s1.admin(), AdminState::Maint);
    assert_eq!(say(&ctx, &mut sess, "enable server b/s1").await, "\n");
    assert_eq!(s1.admin(), AdminState::Ready);
    // The disabled server comes in.
    assert_eq!(say(&ctx, &mut sess, "enable server b/s4").await, "\n");
    assert_eq!(server(&ctx, "b", "s4").admin(), AdminState::Ready);
    for (cmd, answer) in [
        (
            "set server b/s1 state bogus",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
        ),
        (
            "set server b/s1 state",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
        ),
        ("set server b/nope state drain", "No such server.\n\n"),
        ("set server nope/s1 state drain", "No such backend.\n\n"),
        ("set server b state drain", "Require 'backend/server'.\n\n"),
        ("set server", "Require 'backend/server'.\n\n"),
        (
            "set server b/s1",
            "usage: set server <backend>/<server> state | weight\n\n",
        ),
        ("disable server", "Require 'backend/server'.\n\n"),
        ("enable server nope/x", "No such backend.\n\n"),
        ("get weight b/s1", "10 (initial 10)\n\n"),
        ("get weight b/nope", "No such server.\n\n"),
    ] {
        assert_eq!(say(&ctx, &mut sess, cmd).await, answer, "{cmd}");
    }
}

#[tokio::test]
async fn weights_absolute_relative_and_refused() {
    let (ctx, mut sess) = ctx();
    let s1 = server(&ctx, "b", "s1");
    assert_eq!(
        say(&ctx, &mut sess, "set server b/s1 weight 50%").await,
        "\n"
    );
    assert_eq!(s1.weight(), 5);
    assert_eq!(
        say(&ctx, &mut sess, "get weight b/s1").await,
        "5 (initial 10)\n\n"
    );
    assert_eq!(
        say(&ctx, &mut sess, "set server b/s1 weight 300%").await,
        "\n"
    );
    assert_eq!(s1.weight(), 30);
    assert_eq!(say(&ctx, &mut sess, "set weight b/s1 7").await, "\n");
    assert_eq!(s1.weight(), 7);
    for (cmd, answer) in [
        (
            "set server b/s1 weight",
            "Require <weight> or <weight%>.\n\n",
        ),
        // HAProxy prints these two without their own line feed.
        (
            "set server b/s1 weight abc",
            "Empty weight string empty or preceded by garbage\n",
        ),
        (
            "set server b/s1 weight 10abc",
            "Trailing garbage in weight string\n",
        ),
        (
            "set server b/s1 weight 300",
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            "set server b/s1 weight -1",
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            "set server b/s1 weight -5%",
            "Relative weight must be positive.\n\n",
        ),
        (
            "set server st/a weight 2",
            "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n",
        ),
        (
            "set server st/a weight 50%",
            "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n",
        ),
        ("set server st/a weight 0%", "\n"),
        ("set server st/a weight 3", "\n"),
        ("set server st/a weight 100%", "\n"),
    ] {
        assert_eq!(say(&ctx, &mut sess, cmd).await, answer, "{cmd}");
    }
    assert_eq!(s1.weight(), 7);
    assert_eq!(
        say(&ctx, &mut sess, "set maxconn server b/s1 9").await,
        "\n"
    );
    assert_eq!(s1.maxconn(), 9);
    for (cmd, answer) in [
        ("set maxconn server b/s1", "Require <maxconn>.\n\n"),
        (
            "set maxconn server b/s1 abc",
            "maxconn string empty or preceded by garbage\n",
        ),
        (
            "set maxconn server b/s1 5x",
            "Trailing garbage in maxconn string\n",
        ),
        (
            "set maxconn server b/s1 -3",
            "Maxconn must be 0 (no limit) or more.\n\n",
        ),
        ("set maxconn server", "Require 'backend/server'.\n\n"),
        ("set maxconn server b/nope 7", "No such server.\n\n"),
    ] {
        assert_eq!(say(&ctx, &mut sess, cmd).await, answer, "{cmd}");
    }
    assert_eq!(s1.maxconn(), 9);
}

#[tokio::test]
async fn levels_guard_changes() {
    let (ctx, mut sess) = ctx_with(CFG, AccessLevel::Operator);
    for cmd in [
        "set server b/s1 state drain",
        "disable server b/s1",
        "enable server b/s1",
        "set server b/s1 weight 1",
        "set weight b/s1 1",
        "set maxconn server b/s1 3",
        "reload",
    ] {
        assert_eq!(
            say(&ctx, &mut sess, cmd).await,
            "Permission denied\n\n",
            "{cmd}"
        );
    }
    assert_eq!(say(&ctx, &mut sess, "clear table users").await, "\n");
    assert_eq!(say(&ctx, &mut sess, "show cli level").await, "operator\n\n");
    let (ctx, mut sess) = ctx_with(CFG, AccessLevel::User);
    assert_eq!(
        say(&ctx, &mut sess, "clear table users").await,
        "Permission denied\n\n"
    );
    let t = ctx.shared.current.load().tables[0].clone();
    t.add(&Key::bytes(b"alice"), &[(Data::HttpReqRate, 1)]);
    assert_eq!(
        say(&ctx, &mut sess, "show table users").await,
        "# table: users, type: string, size:1024, used:1\n# contents not dumped due to insufficient privileges\n\n"
    );
    assert!(say(&ctx, &mut sess, "show stat")
        .await
        .starts_with("# pxname"));
}

#[tokio::test]
async fn show_table_in_haproxy_format() {
    let (ctx, mut sess) = ctx();
    let t = ctx.shared.current.load().tables[0].clone();
    for who in ["bob smith", "alice", "c=\\"] {
        t.add(
            &Key::bytes(who.as_bytes()),
            &[
                (Data::HttpReqRate, 2),
                (Data::Gpc(0), 1),
                (Data::ConnCur, 1),
            ],
        );
    }
    assert_eq!(
        say(&ctx, &mut sess, "show table").await,
        "# table: users, type: string, size:1024, used:3\n\n"
    );
    let out = say(&ctx, &mut sess, "show table users").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "# table: users, type: string, size:1024, used:3");
    // Keys in order, escaped as HAProxy does; data in HAProxy's type
    // order (gpc0, conn_cur, http_req_rate), not the `store` order.
    let strip = |l: &str| {
        l.split_once(": ")
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    };
    let (addr, rest) = strip(lines[1]).expect("entry");
    assert!(addr.starts_with("0x"), "{addr}");
    assert!(
        rest.starts_with("key=alice use=1 exp=")
            && rest.ends_with(" gpc0=1 conn_cur=1 http_req_rate(10000)=2"),
        "{rest}"
    );
    assert!(strip(lines[2])
        .expect("entry")
        .1
        .starts_with("key=bob\\ smith use=1 "));
    assert!(strip(lines[3])
        .expect("entry")
        .1
        .starts_with("key=c\\=\\\\ use=1 "));
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[4], "");
    // One key; an absent key prints nothing at all.
    let one = say(&ctx, &mut sess, "show table users key alice").await;
    assert_eq!(one.lines().count(), 3, "{one}");
    assert_eq!(
        say(&ctx, &mut sess, "show table users key nobody").await,
        "\n"
    );
    for (cmd, answer) in [
        ("show table nope", "No such table\n\n"),
        ("show table users key", "Key value expected\n\n"),
        (
            "show table users extra",
            "Optional argument only supports key <key>\n\n",
        ),
        ("clear table nope", "No such table\n\n"),
        ("clear table users key", "Key value expected\n\n"),
        (
            "clear table",
            "Required arguments: <table> or <table> key <key>\n\n",
        ),
        ("clear table users key alice", "\n"),
    ] {
        assert_eq!(say(&ctx, &mut sess, cmd).await, answer, "{cmd}");
    }
    assert_eq!(t.len(), 2);
    assert_eq!(say(&ctx, &mut sess, "clear table users").await, "\n");
    assert!(t.is_empty());
}

#[test]
fn keys_print_as_haproxy_prints_them() {
    use crate::admin::stat::{dump_text, key_text};
    let v4 = Key::ip("10.1.2.3".parse().expect("ip"));
    assert_eq!(key_text("ip", &v4), "10.1.2.3");
    assert_eq!(key_text("ipv6", &v4), "::ffff:10.1.2.3");
    assert_eq!(key_text("integer", &Key::Int(42)), "42");
    assert_eq!(key_text("binary", &Key::bytes(&[0, 0xab])), "00AB");
    assert_eq!(
        dump_text(b"a b=c\\d\t\n\r\x1b\x7f\xc3"),
        "a\\ b\\=c\\\\d\\t\\n\\r\\e\\x7F\\xC3"
    );
    assert_eq!(dump_text(b"ab\0cd"), "ab");
}

#[tokio::test]
async fn servers_state_backend_and_info() {
    let (ctx, mut sess) = ctx();
    server(&ctx, "b", "s1").set_admin(AdminState::Drain);
    let out = say(&ctx, &mut sess, "show servers state b").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[1], "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port");
    // Drain is admin flag 8; unchecked: status INI (1), health = rise.
    assert_eq!(
        lines[2],
        "3 b 1 s1 127.0.0.1 2 8 10 10 0 1 0 2 0 0 0 0 - 9001 - 0 0 - - 0"
    );
    // Checked, not yet checked: status INI, result unknown, state 6.
    assert_eq!(
        lines[3],
        "3 b 2 s2 127.0.0.1 2 0 20 20 0 1 0 2 6 0 0 0 - 9002 - 0 0 - - 0"
    );
    // Maintenance: stopped, flag 1.
    assert_eq!(
        lines[5],
        "3 b 4 s4 127.0.0.1 0 1 1 1 0 1 0 2 0 0 0 0 - 9004 - 0 0 - - 0"
    );
    assert_eq!(lines.len(), 6 + 1, "{out}");
    assert_eq!(
        say(&ctx, &mut sess, "show servers state nope").await,
        "Can't find backend.\n\n"
    );
    assert_eq!(
        say(&ctx, &mut sess, "show backend").await,
        "# name\nb\nusers\nst\n\n"
    );
    let info = say(&ctx, &mut sess, "show info").await;
    assert!(info.starts_with("Name: llmgw\nVersion: "), "{info}");
    for needle in [
        "\nNbthread: 2\n",
        "\nNbproc: 1\n",
        &format!("\nPid: {}\n", std::process::id()),
        "\nUptime: 0d 0h00m00s\n",
        "\nUptime_sec: 0\n",
        "\nMaxconn: 1000\n",
        "\nListeners: 1\n",
        "\nStart_time_sec: 1700000000\n",
    ] {
        assert!(info.contains(needle), "{needle:?} in {info}");
    }
    assert!(info.ends_with("\n\n"));
    assert_eq!(
        say(&ctx, &mut sess, "show version").await,
        format!("{}\n\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn show_activity_is_per_thread_as_haproxy_prints_it() {
    let (ctx, mut sess) = ctx();
    // No serving threads started in this process: the calling thread is
    // the only one, and it accepted nothing.
    let out = say(&ctx, &mut sess, "show activity").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "thread_id: 1 (1..1)", "{out}");
    assert!(lines[1].starts_with("date_now: "), "{out}");
    let (secs, micros) = lines[1][10..].split_once('.').expect("seconds.micros");
    assert!(secs.parse::<u64>().expect("seconds") > 1_700_000_000);
    assert_eq!(micros.len(), 6, "{out}");
    assert_eq!(
        &lines[2..],
        [
            "accepted: 0 [ 0 ]",
            "accq_pushed: 0 [ 0 ]",
            "fd_takeover: 0 [ 0 ]",
            ""
        ]
    );
}

#[tokio::test]
async fn lines_prompt_and_quit() {
    let (ctx, mut sess) = ctx();
    // Several commands on a line, each with its closing empty line.
    assert_eq!(
        say(&ctx, &mut sess, "show backend;show backend").await,
        "# name\nb\nusers\nst\n\n# name\nb\nusers\nst\n\n"
    );
    // The prompt follows each answer, from the command that turned it on.
    assert_eq!(say(&ctx, &mut sess, "prompt").await, "\n> ");
    assert!(sess.interactive);
    assert_eq!(
        say(&ctx, &mut sess, "show backend").await,
        "# name\nb\nusers\nst\n\n> "
    );
    assert_eq!(
        say(&ctx, &mut sess, "set server b/nope state drain").await,
        "No such server.\n\n> "
    );
    let out = run_line(&ctx, &mut sess, "show backend;quit;show backend").await;
    assert_eq!(out.output, "# name\nb\nusers\nst\n\n> ");
    assert!(out.quit);
    // Leaving prompt mode prints no prompt.
    assert_eq!(say(&ctx, &mut sess, "prompt").await, "\n");
    assert!(!sess.interactive);
    let mut one = Session {
        level: AccessLevel::Admin,
        interactive: false,
    };
    assert_eq!(
        say(&ctx, &mut one, "prompt;show backend").await,
        "\n> # name\nb\nusers\nst\n\n> "
    );
    // An empty command: the whole list.
    let e = say(&ctx, &mut sess, "").await;
    assert!(e.starts_with("Unknown command. Please enter one of the following commands only:\n"));
    assert!(e.ends_with("  quit                                    : disconnect\n\n"));
    let e = say(&ctx, &mut sess, "show backend;").await;
    assert!(
        e.starts_with("# name\nb\nusers\nst\n\nUnknown command. Please"),
        "{e}"
    );
}

#[tokio::test]
async fn reload_without_a_file_says_why() {
    let (ctx, mut sess) = ctx();
    let out = say(&ctx, &mut sess, "reload").await;
    assert!(
        out.starts_with("Success=0\n--\n[ALERT] serving the embedded default"),
        "{out}"
    );
    assert!(out.ends_with("\n\n"));
}

#[test]
fn line_reading_and_its_limit() {
    let mut b = b"show stat\r\nshow info\npart".to_vec();
    assert_eq!(next_line(&mut b), Ok(Some("show stat".into())));
    assert_eq!(next_line(&mut b), Ok(Some("show info".into())));
    assert_eq!(next_line(&mut b), Ok(None));
    assert_eq!(b, b"part");
    // 16 382 bytes and the line feed fit; one more does not.
    let mut b = vec![b'x'; MAX_LINE - 1];
    b.push(b'\n');
    assert!(matches!(next_line(&mut b), Ok(Some(l)) if l.len() == MAX_LINE - 1));
    let mut b = vec![b'x'; MAX_LINE];
    assert_eq!(next_line(&mut b), Err(()));
    b.push(b'\n');
    assert_eq!(next_line(&mut b), Err(()));
}

#[tokio::test]
async fn the_socket_gets_its_mode_and_replaces_a_stale_one() {
    let dir = std::env::temp_dir().join(format!("llmgw-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("rt.sock");
    let mut sock = StatsSocket::new(path.clone());
    sock.mode = Some(0o600);
    let first = bind(&sock).expect("bind");
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    drop(first);
    // The socket file of a gone process is replaced.
    sock.mode = Some(0o660);
    let _second = bind(&sock).expect("rebind over a stale socket");
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o660);
    assert!(!dir
        .join(format!("rt.sock.{}.tmp", std::process::id()))
        .exists());
    // A regular file is never replaced.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, "keep me").expect("write");
    let e = bind(&StatsSocket::new(file.clone())).unwrap_err();
    assert!(e.contains("exists and is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "keep me");
    let _ = std::fs::remove_dir_all(&dir);
}
