use std::cell::Cell;
use std::time::Duration;

use super::*;
use crate::llm::usage::Tokens;

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000_000_000) };
}

fn now() -> u64 {
    NOW.with(Cell::get)
}

fn advance(ms: u64) {
    NOW.with(|c| c.set(c.get() + ms));
}

fn set_now(ms: u64) {
    NOW.with(|c| c.set(ms));
}

fn table(size: u64, expire: Option<u64>, store: &[&str]) -> Table {
    let def = StickTable {
        name: "t".into(),
        key_type: "ip".into(),
        size,
        expire: expire.map(Duration::from_millis),
        store: store.iter().map(|s| s.to_string()).collect(),
    };
    let t = Table::with_clock(&def, now).expect("valid table");
    t.record_deltas(true);
    t
}

fn ip(last: u8) -> Key {
    Key::ip(IpAddr::from([10, 0, 0, last]))
}

#[test]
fn the_seed_rule_sees_the_101st_connection_of_a_window_at_any_boundary() {
    // `sc0_conn_rate gt 100` over conn_rate(10s): whatever the phase of
    // the wall clock, the 101st connection within 10 s reads 101.
    for phase in [0, 1, 4_999, 9_990, 9_999] {
        set_now(10_000 * 77 + phase);
        let t = table(100, Some(60_000), &["conn_rate(10s)"]);
        let k = ip(1);
        for i in 1..=101i64 {
            t.add(&k, &[(Data::ConnRate, 1)]);
            assert_eq!(t.get(&k, Data::ConnRate), Some(i), "phase {phase}");
            advance(1);
        }
    }
}

#[test]
fn rates_slide_and_counters_do_not() {
    set_now(1_000_000);
    let t = table(10, None, &["http_req_cnt", "http_req_rate(1s)"]);
    let k = ip(2);
    for _ in 0..10 {
        t.add(&k, &[(Data::HttpReqCnt, 1), (Data::HttpReqRate, 1)]);
    }
    assert_eq!(t.get(&k, Data::HttpReqRate), Some(10));
    advance(999);
    assert_eq!(t.get(&k, Data::HttpReqRate), Some(10));
    // Their 100 ms slot is half out of the window…
    advance(51);
    assert_eq!(t.get(&k, Data::HttpReqRate), Some(5));
    // …then all of it.
    advance(50);
    assert_eq!(t.get(&k, Data::HttpReqRate), Some(0));
    assert_eq!(t.get(&k, Data::HttpReqCnt), Some(10));
    assert_eq!(t.get(&k, Data::ConnRate), None, "not stored");
}

#[test]
fn least_recently_updated_entry_goes_when_full() {
    let t = table(3, None, &["gpc0"]);
    for i in 1..=3 {
        t.add(&ip(i), &[(Data::Gpc(0), 1)]);
    }
    // ip(1) is updated again: ip(2) is now the least recent.
    t.add(&ip(1), &[(Data::Gpc(0), 1)]);
    t.add(&ip(4), &[(Data::Gpc(0), 1)]);
    assert_eq!(t.len(), 3);
    assert_eq!(t.get(&ip(2), Data::Gpc(0)), None);
    assert_eq!(t.get(&ip(1), Data::Gpc(0)), Some(2));
    assert_eq!(t.get(&ip(4), Data::Gpc(0)), Some(1));
}

#[test]
fn a_large_table_holds_its_size() {
    let t = table(2048, None, &["conn_cnt"]);
    for i in 0..10_000u32 {
        t.add(&Key::Int(i64::from(i)), &[(Data::ConnCnt, 1)]);
    }
    let n = t.len();
    assert!(n <= 2048 && n > 1900, "{n} entries");
    assert_eq!(t.get(&Key::Int(9_999), Data::ConnCnt), Some(1));
}

#[test]
fn entries_expire_after_their_last_update() {
    set_now(5_000_000);
    let t = table(10, Some(1_000), &["conn_cur"]);
    t.add(&ip(1), &[(Data::ConnCur, 1)]);
    t.add(&ip(2), &[(Data::ConnCur, 1)]);
    advance(600);
    t.add(&ip(2), &[(Data::ConnCur, 1)]);
    advance(400);
    assert_eq!(t.get(&ip(1), Data::ConnCur), None, "expired at 1 s");
    assert_eq!(t.get(&ip(2), Data::ConnCur), Some(2));
    advance(599);
    assert_eq!(t.len(), 1);
    advance(1);
    assert!(t.is_empty());
}

#[test]
fn clear_one_key_or_all() {
    let t = table(10, None, &["gpc0"]);
    for i in 1..=3 {
        t.add(&ip(i), &[(Data::Gpc(0), 1)]);
    }
    t.clear(Some(&ip(2)));
    let keys: Vec<String> = t.snapshot().iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, ["10.0.0.1", "10.0.0.3"]);
    t.clear(None);
    assert!(t.is_empty());
}

/// Replays one node's updates: (key, data, amount, clock step).
fn run_node(updates: &[(u8, Data, i64, u64)]) -> Vec<Delta> {
    let t = table(1000, None, STORE);
    for &(k, d, n, step) in updates {
        advance(step);
        t.add(&ip(k), &[(d, n)]);
    }
    t.drain_deltas()
}

const STORE: &[&str] = &[
    "conn_cur",
    "conn_cnt",
    "conn_rate(10s)",
    "gpc(2)",
    "tokens_rate(1m)",
];

#[test]
fn deltas_merge_the_same_in_any_order_and_any_grouping() {
    const T0: u64 = 10_000 * 500 + 3_000;
    set_now(T0);
    let a = run_node(&[
        (1, Data::ConnCur, 1, 0),
        (1, Data::ConnCnt, 1, 0),
        (1, Data::ConnRate, 1, 4_000),
        (2, Data::TokensRate, 120, 5_000), // crosses a 10 s boundary
        (1, Data::ConnCur, -1, 10),
        (2, Data::Gpc(1), 3, 0),
    ]);
    set_now(T0);
    let b = run_node(&[
        (1, Data::ConnRate, 1, 0),
        (3, Data::Gpc(0), 1, 2_000),
        (2, Data::TokensRate, 30, 9_000),
        (1, Data::ConnCur, 1, 0),
    ]);
    assert!(a.iter().any(|d| d.data == Data::ConnRate));
    let all: Vec<Delta> = a.iter().chain(&b).cloned().collect();
    // Read back within the 10 s period both nodes counted connections in.
    set_now(T0 + 6_000);

    let merged = |deltas: &[Delta]| {
        let t = table(1000, None, STORE);
        for d in deltas {
            t.apply(d);
        }
        t.snapshot()
    };
    let reference = merged(&all);
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(merged(&reversed), reference);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(merged(&sorted), reference);
    // Grouped: deltas of the same (key, data, period) summed first, as a
    // node relaying several others would.
    let mut grouped: Vec<Delta> = Vec::new();
    for d in sorted {
        match grouped.last_mut() {
            Some(g) if (g.key.clone(), g.data, g.period) == (d.key.clone(), d.data, d.period) => {
                g.amount += d.amount
            }
            _ => grouped.push(d),
        }
    }
    assert!(grouped.len() < all.len(), "nothing was grouped");
    assert_eq!(merged(&grouped), reference);

    // And the figures are the sums: conn_cur 1 - 1 + 1, conn_rate 2.
    let row = &reference.iter().find(|(k, _)| *k == ip(1)).expect("ip 1").1;
    let get = |d: Data| row.iter().find(|(x, _)| *x == d).map(|(_, n)| *n);
    assert_eq!(get(Data::ConnCur), Some(1));
    assert_eq!(get(Data::ConnCnt), Some(1));
    assert_eq!(get(Data::ConnRate), Some(2));
}

#[test]
fn nothing_is_kept_for_deltas_unless_asked() {
    let t = table(10, None, &["conn_cnt"]);
    t.record_deltas(false);
    t.add(&ip(1), &[(Data::ConnCnt, 1)]);
    assert!(t.drain_deltas().is_empty());
    assert_eq!(t.get(&ip(1), Data::ConnCnt), Some(1));
}

#[test]
fn a_drain_takes_each_change_once() {
    let t = table(10, None, &["conn_cnt"]);
    t.add(&ip(1), &[(Data::ConnCnt, 1)]);
    t.add(&ip(1), &[(Data::ConnCnt, 1)]);
    let d = t.drain_deltas();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].amount, 2);
    assert!(t.drain_deltas().is_empty());
    // Applied deltas are not local changes: not drained again.
    t.apply(&d[0]);
    assert!(t.drain_deltas().is_empty());
    assert_eq!(t.get(&ip(1), Data::ConnCnt), Some(4));
}

#[test]
fn store_lists_parse_like_haproxy() {
    let s = |v: &[&str]| parse_store(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    let cols = s(&["conn_rate(10s)", "gpc(2)", "gpc_rate(2,1m)", "http_req_cnt"]).expect("valid");
    let got: Vec<(Data, u64)> = cols.iter().map(|c| (c.data, c.period_ms)).collect();
    assert_eq!(
        got,
        [
            (Data::ConnRate, 10_000),
            (Data::Gpc(0), 0),
            (Data::Gpc(1), 0),
            (Data::GpcRate(0), 60_000),
            (Data::GpcRate(1), 60_000),
            (Data::HttpReqCnt, 0),
        ]
    );
    assert_eq!(
        s(&["conn_rate"]).unwrap_err(),
        "stick-table data 'conn_rate' needs a period, e.g. conn_rate(10s)"
    );
    assert_eq!(
        s(&["conn_cur(1s)"]).unwrap_err(),
        "stick-table data 'conn_cur(1s)' takes no argument"
    );
    assert_eq!(
        s(&["bogus"]).unwrap_err(),
        "unknown stick-table data 'bogus'"
    );
    assert!(s(&["gpc(0)"]).is_err());
}

fn tokens(input: u64, output: u64) -> Tokens {
    Tokens { input, output }
}

/// A request of `estimate` tracked on `t` as sc0, settled when dropped.
fn request(t: &Arc<Table>, estimate: Tokens) -> Tracked {
    let mut r = Tracked::default();
    r.account(estimate, 100);
    r.track(0, t, ip(1));
    r
}

#[test]
fn a_token_reservation_is_seen_at_once_and_settled_on_the_reported_usage() {
    set_now(60_000 * 500);
    let t = Arc::new(table(
        10,
        Some(120_000),
        &["tokens_rate(1m)", "tokens_in_rate(1m)", "bytes_in_cnt"],
    ));
    let mut a = request(&t, tokens(30, 50));
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(80));
    // A second request sees the first's reservation with its own.
    let b = request(&t, tokens(30, 50));
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(160));
    // The first answer reports 40 tokens: its reservation becomes that.
    advance(2_000);
    a.answered(200);
    a.from_upstream();
    a.response_data(br#"{"usage":{"prompt_tokens":28,"completion_tokens":12}}"#);
    drop(a);
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(80 + 40));
    assert_eq!(t.get(&ip(1), Data::TokensInRate), Some(30 + 28));
    // A gateway-made answer (a deny, an error) costs nothing.
    let mut denied = b;
    denied.answered(429);
    drop(denied);
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(40));
    assert_eq!(t.get(&ip(1), Data::BytesInCnt), Some(200));
    // An upstream 2xx without a usage report costs its estimate.
    let mut c = request(&t, tokens(10, 10));
    c.answered(200);
    c.from_upstream();
    c.response_data(b"data: {\"choices\":[]}\n\n");
    drop(c);
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(60));
    // The settled tokens leave the window with the reservation's slot.
    advance(60_000 + 6_000);
    assert_eq!(t.get(&ip(1), Data::TokensRate), Some(0));
}

#[test]
fn a_stream_outlasting_the_window_counts_its_usage_when_it_ends() {
    set_now(60_000 * 700);
    let t = Arc::new(table(10, None, &["tokens_out_rate(1m)"]));
    let mut long = request(&t, tokens(0, 100));
    // Two minutes later the reservation has left the window.
    advance(120_000);
    assert_eq!(t.get(&ip(1), Data::TokensOutRate), Some(0));
    long.answered(200);
    long.from_upstream();
    long.response_data(br#"{"usage":{"input_tokens":1,"output_tokens":70}}"#);
    drop(long);
    assert_eq!(t.get(&ip(1), Data::TokensOutRate), Some(70));
}

#[test]
fn a_connection_entry_counts_its_requests_and_is_not_tracked_again() {
    set_now(5_000_000);
    let t = Arc::new(table(
        10,
        None,
        &[
            "conn_cur",
            "conn_cnt",
            "sess_cnt",
            "http_req_cnt",
            "http_err_cnt",
        ],
    ));
    let k = ip(9);
    let mut conn = Tracked::default();
    conn.track_connection(0, &t, k.clone());
    // Counted as a connection at once, as a session only once accepted.
    assert_eq!(t.get(&k, Data::ConnCur), Some(1));
    assert_eq!(t.get(&k, Data::ConnCnt), Some(1));
    assert_eq!(t.get(&k, Data::SessCnt), Some(0));
    conn.session_accepted();
    assert_eq!(t.get(&k, Data::SessCnt), Some(1));
    let conn = Arc::new(conn);
    for _ in 0..3 {
        let mut req = Tracked::for_request(Some(&conn));
        // The request's own `track-sc0` finds the slot taken: nothing is
        // added to conn_cur/conn_cnt, and the fetch reads the connection's.
        req.track(0, &t, k.clone());
        assert_eq!(req.get(0, Data::ConnCur), Some(1));
        req.answered(404);
    }
    assert_eq!(t.get(&k, Data::ConnCur), Some(1));
    assert_eq!(t.get(&k, Data::ConnCnt), Some(1));
    assert_eq!(t.get(&k, Data::HttpReqCnt), Some(3));
    assert_eq!(t.get(&k, Data::HttpErrCnt), Some(3));
    // Another slot is the request's own, let go with the request.
    let mut req = Tracked::for_request(Some(&conn));
    req.track(1, &t, ip(10));
    assert_eq!(t.get(&ip(10), Data::ConnCur), Some(1));
    drop(req);
    assert_eq!(t.get(&ip(10), Data::ConnCur), Some(0));
    assert_eq!(t.get(&k, Data::ConnCur), Some(1));
    // The connection ends: its conn_cur is taken back.
    drop(conn);
    assert_eq!(t.get(&k, Data::ConnCur), Some(0));
}

#[test]
fn token_settlements_merge_like_any_delta() {
    // Node a reserves 100 tokens, then settles at 40 two seconds later
    // (a negative amount into the reservation's slot); node b counts 30.
    const T0: u64 = 60_000 * 900 + 1_000;
    set_now(T0);
    let node = table(100, None, STORE);
    node.add(&ip(7), &[(Data::TokensRate, 100)]);
    // Shipped before the request ends, as a cluster drains periodically.
    let mut a = node.drain_deltas();
    advance(2_000);
    node.settle(&ip(7), T0, &[(Data::TokensRate, 100, 40)]);
    a.extend(node.drain_deltas());
    assert!(a.iter().any(|d| d.amount == -60), "{a:?}");
    set_now(T0 + 500);
    let b = table(100, None, STORE);
    b.add(&ip(7), &[(Data::TokensRate, 30)]);
    let b = b.drain_deltas();
    set_now(T0 + 3_000);
    let merged = |deltas: Vec<&Delta>| {
        let t = table(100, None, STORE);
        for d in deltas {
            t.apply(d);
        }
        t.get(&ip(7), Data::TokensRate)
    };
    let forward: Vec<&Delta> = a.iter().chain(&b).collect();
    let mut backward = forward.clone();
    backward.reverse();
    // The settlement may arrive before the reservation it corrects.
    let mut negative_first = forward.clone();
    negative_first.sort_by_key(|d| d.amount);
    assert_eq!(merged(forward), Some(70));
    assert_eq!(merged(backward), Some(70));
    assert_eq!(merged(negative_first), Some(70));
}

#[test]
fn dump_shows_use_expiry_and_values_in_store_order() {
    let t = Arc::new(table(10, Some(30_000), &["http_req_rate(10s)", "conn_cur"]));
    let mut a = Tracked::default();
    a.track(0, &t, ip(1));
    let mut b = Tracked::default();
    b.track(0, &t, ip(1));
    advance(1000);
    let d = t.dump();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key, ip(1));
    // Two requests track the entry now; it was updated 1 s ago.
    assert_eq!((d[0].refs, d[0].expires_in_ms), (2, Some(29_000)));
    let vals: Vec<(Data, i64)> = d[0].values.iter().map(|(c, v)| (c.data, *v)).collect();
    assert_eq!(vals, [(Data::HttpReqRate, 2), (Data::ConnCur, 2)]);
    assert_ne!(d[0].addr, 0);
    drop(a);
    drop(b);
    assert_eq!(t.dump()[0].refs, 0);
    // No `expire`: no expiry to show; tracking without conn_cur still counts use.
    let t = Arc::new(table(10, None, &["http_req_cnt"]));
    let mut c = Tracked::default();
    c.track(0, &t, ip(2));
    assert_eq!((t.dump()[0].refs, t.dump()[0].expires_in_ms), (1, None));
}

#[test]
fn keys_parse_by_table_type() {
    let typed = |key_type: &str| {
        Table::with_clock(
            &StickTable {
                name: "t".into(),
                key_type: key_type.into(),
                size: 10,
                expire: None,
                store: vec![],
            },
            now,
        )
        .expect("table")
    };
    let ip_t = typed("ip");
    assert_eq!(ip_t.parse_key("10.0.0.1"), Some(ip(1)));
    assert_eq!(
        ip_t.parse_key("::1"),
        Some(Key::ip("::1".parse().expect("v6")))
    );
    assert_eq!(ip_t.parse_key("abc"), None);
    let v6 = typed("ipv6");
    // As HAProxy: an IPv4 literal is not an ipv6 key; its mapped form is.
    assert_eq!(v6.parse_key("10.0.0.1"), None);
    assert_eq!(v6.parse_key("::ffff:10.0.0.1"), Some(ip(1)));
    assert_eq!(typed("integer").parse_key("-42"), Some(Key::Int(-42)));
    assert_eq!(typed("integer").parse_key("4x"), None);
    assert_eq!(
        typed("string").parse_key("bob smith"),
        Some(Key::bytes(b"bob smith"))
    );
    assert_eq!(
        typed("binary").parse_key("00fF"),
        Some(Key::bytes(&[0, 255]))
    );
    assert_eq!(typed("binary").parse_key("0"), None);
    assert_eq!(typed("binary").parse_key("zz"), None);
}
