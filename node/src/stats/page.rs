//! `/stats`: the HTML page (`page.html`, embedded in the binary), with a
//! first paint rendered here from the same document `/stats.json` serves —
//! what a browser without JavaScript shows — and that document inlined for
//! the page's script, which then polls for fresh ones.
//!
//! Everything shown comes from the configuration or from clients (model
//! names), so everything is escaped; and the page's own inline script and
//! style run by a per-response nonce, nothing else.

use http::{header, HeaderValue, Response};
use serde_json::Value;

use crate::http::body::RespBody;

const TEMPLATE: &str = include_str!("page.html");

/// HTML text or attribute value.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// JSON inside `<script type="application/json">`: no `<` at all, so
/// neither `</script>` nor `<!--` can end or bend the element.
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn n(v: &Value) -> String {
    match v.as_u64() {
        Some(x) => {
            // Thousands separated as the script shows them.
            let s = x.to_string();
            let mut o = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    o.push(',');
                }
                o.push(c);
            }
            o
        }
        None => "-".into(),
    }
}

fn bytes(v: &Value) -> String {
    let Some(mut x) = v.as_f64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while x >= 1024.0 && i < units.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{x} B")
    } else {
        format!("{x:.1} {}", units[i])
    }
}

fn dur(v: &Value) -> String {
    let Some(s) = v.as_u64() else {
        return "-".into();
    };
    let (d, h, m, x) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{x}s"),
        (0, 0, _) => format!("{m}m{x}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x < 10.0 => format!("{} ms", (x * 10.0).round() / 10.0),
        Some(x) => format!("{} ms", x.round()),
        None => "-".into(),
    }
}

/// The mean of a `times` object, or `-` without samples.
fn mean(t: &Value) -> String {
    if t["count"].as_u64().unwrap_or(0) == 0 {
        return "-".into();
    }
    ms(&t["mean"])
}

fn head(groups: &[(&str, usize)], cols: &[&str]) -> String {
    let mut o = String::from("<thead><tr class=\"groups\">");
    for (g, span) in groups {
        o.push_str(&format!(
            "<th scope=\"colgroup\" colspan=\"{span}\">{}</th>",
            esc(g)
        ));
    }
    o.push_str("</tr><tr>");
    for c in cols {
        o.push_str(&format!("<th scope=\"col\">{}</th>", esc(c)));
    }
    o.push_str("</tr></thead>");
    o
}

/// A row; the cell at `status` (if any) is marked as the status cell, as
/// the script marks it.
fn row(key: &str, class: &str, name: &str, cells: &[String], status: Option<usize>) -> String {
    let mut o = format!(
        "<tr data-key=\"{}\" class=\"{}\"><th scope=\"row\">{}</th>",
        esc(key),
        esc(class),
        esc(name)
    );
    for (i, c) in cells.iter().enumerate() {
        o.push_str(if Some(i) == status {
            "<td class=\"st\">"
        } else {
            "<td>"
        });
        o.push_str(&esc(c));
        o.push_str("</td>");
    }
    o.push_str("</tr>");
    o
}

fn responses(t: &Value) -> [String; 3] {
    let r = &t["responses"];
    [n(&r["2xx"]), n(&r["4xx"]), n(&r["5xx"])]
}

/// The tables as the script would first draw them, minus rates (which
/// need two samples) and admin controls (which need the script).
pub fn snapshot(doc: &Value) -> String {
    let empty = Vec::new();
    let list = |v: &Value| v.as_array().unwrap_or(&empty).clone();
    let mut o = String::new();

    o.push_str("<section aria-labelledby=\"h-frontends\"><h2 id=\"h-frontends\">Frontends</h2><div class=\"wrap\"><table id=\"frontends\"><caption class=\"sr\">Frontends</caption>");
    o.push_str(&head(
        &[
            ("", 1),
            ("Session rate", 2),
            ("Sessions", 4),
            ("Requests", 2),
            ("Responses", 3),
            ("Bytes", 2),
            ("Denied", 2),
            ("Errors", 1),
            ("Time", 1),
            ("", 1),
        ],
        &[
            "Name", "Cur", "Max", "Cur", "Max", "Limit", "Total", "Rate", "Total", "2xx", "4xx",
            "5xx", "In", "Out", "Conn", "Req", "Req", "Tt mean", "Status",
        ],
    ));
    o.push_str("<tbody>");
    for f in list(&doc["frontends"]) {
        let t = &f["traffic"];
        let name = f["name"].as_str().unwrap_or_default();
        let limit = match f["maxconn"].as_u64() {
            Some(0) | None => "-".into(),
            _ => n(&f["maxconn"]),
        };
        let mut cells = vec![
            "-".into(),
            "-".into(),
            n(&t["sessions"]["cur"]),
            n(&t["sessions"]["max"]),
            limit,
            n(&t["sessions"]["total"]),
            "-".into(),
            n(&t["requests"]),
        ];
        cells.extend(responses(t));
        cells.extend([
            bytes(&t["bytes_in"]),
            bytes(&t["bytes_out"]),
            n(&f["denied_conn"]),
            n(&t["denied"]),
            n(&t["req_errors"]),
            mean(&t["times_ms"]["total"]),
            f["status"].as_str().unwrap_or_default().into(),
        ]);
        let class = f["class"].as_str().unwrap_or_default();
        o.push_str(&row(&format!("fe/{name}"), class, name, &cells, Some(17)));
    }
    o.push_str("</tbody></table></div></section>");

    for b in list(&doc["backends"]) {
        let name = b["name"].as_str().unwrap_or_default();
        let balance = b["balance"].as_str().unwrap_or_default().to_lowercase();
        o.push_str(&format!(
            "<section data-backend=\"{0}\"><h2>Backend {0} <small>{1}</small></h2><div class=\"wrap\"><table><caption class=\"sr\">Servers of backend {0}</caption>",
            esc(name),
            esc(&balance)
        ));
        o.push_str(&head(
            &[
                ("", 1),
                ("Queue", 2),
                ("Session rate", 2),
                ("Sessions", 4),
                ("Responses", 3),
                ("Bytes", 2),
                ("Errors", 2),
                ("Warnings", 2),
                ("Time", 3),
                ("Server", 8),
            ],
            &[
                "Name", "Cur", "Max", "Cur", "Max", "Cur", "Max", "Limit", "Total", "2xx", "4xx",
                "5xx", "In", "Out", "Conn", "Resp", "Retr", "Redis", "Tr", "TTFT", "p50", "Status",
                "LastChk", "Wght", "Act", "Bck", "Chk", "Dwn", "Lastchg",
            ],
        ));
        o.push_str("<tbody>");
        for v in list(&b["servers"]) {
            let t = &v["traffic"];
            let sname = v["name"].as_str().unwrap_or_default();
            let backup = v["backup"].as_bool().unwrap_or(false);
            let chk = if v["checked"].as_bool().unwrap_or(false) {
                let code = v["check_code"]
                    .as_u64()
                    .map(|c| format!("/{c}"))
                    .unwrap_or_default();
                format!(
                    "{}{code} in {}ms",
                    v["check_status"].as_str().unwrap_or_default(),
                    v["check_duration_ms"].as_f64().unwrap_or(0.0).round()
                )
            } else {
                "-".into()
            };
            let (w, cw) = (&v["effective_weight"], &v["weight"]);
            let wght = if w == cw {
                n(w)
            } else {
                format!("{} ({})", n(w), n(cw))
            };
            let limit = match v["maxconn"].as_u64() {
                Some(0) | None => "-".into(),
                _ => n(&v["maxconn"]),
            };
            let mut cells = vec![
                n(&v["queued"]),
                "-".into(),
                "-".into(),
                "-".into(),
                n(&t["sessions"]["cur"]),
                n(&t["sessions"]["max"]),
                limit,
                n(&t["sessions"]["total"]),
            ];
            cells.extend(responses(t));
            cells.extend([
                bytes(&t["bytes_in"]),
                bytes(&t["bytes_out"]),
                n(&t["conn_errors"]),
                n(&t["resp_errors"]),
                n(&v["retries"]),
                n(&v["redispatches"]),
                mean(&t["times_ms"]["response"]),
                "-".into(),
                "-".into(),
                v["state"].as_str().unwrap_or_default().into(),
                chk,
                wght,
                if backup { "-" } else { "Y" }.into(),
                if backup { "Y" } else { "-" }.into(),
                n(&v["checks_failed"]),
                n(&v["down_transitions"]),
                dur(&v["last_change_s"]),
            ]);
            let class = v["class"].as_str().unwrap_or_default();
            o.push_str(&row(
                &format!("sv/{name}/{sname}"),
                class,
                sname,
                &cells,
                Some(20),
            ));
        }
        o.push_str("</tbody><tfoot>");
        let t = &b["traffic"];
        let mut cells = vec![
            n(&b["queue"]["current"]),
            n(&b["queue"]["max"]),
            "-".into(),
            "-".into(),
            n(&t["sessions"]["cur"]),
            n(&t["sessions"]["max"]),
            "-".into(),
            n(&t["sessions"]["total"]),
        ];
        cells.extend(responses(t));
        cells.extend([
            bytes(&t["bytes_in"]),
            bytes(&t["bytes_out"]),
            n(&t["conn_errors"]),
            n(&t["resp_errors"]),
            n(&b["retries"]),
            n(&b["redispatches"]),
            mean(&t["times_ms"]["response"]),
            mean(&t["times_ms"]["ttft"]),
            ms(&t["times_ms"]["ttft"]["p50"]),
            b["status"].as_str().unwrap_or_default().into(),
            "-".into(),
            n(&b["weight"]),
            n(&b["act"]),
            n(&b["bck"]),
            "-".into(),
            "-".into(),
            dur(&b["last_change_s"]),
        ]);
        let class = b["class"].as_str().unwrap_or_default();
        o.push_str(&row(
            &format!("be/{name}"),
            class,
            "Backend",
            &cells,
            Some(20),
        ));
        o.push_str("</tfoot></table></div>");

        let models = list(&b["models"]);
        if !models.is_empty() {
            o.push_str(&format!(
                "<div class=\"wrap\"><table class=\"models\"><caption>Models on backend {}</caption>",
                esc(name)
            ));
            o.push_str(&head(
                &[
                    ("", 1),
                    ("Requests", 2),
                    ("Tokens", 3),
                    ("Time to first token", 3),
                    ("Time", 1),
                ],
                &[
                    "Model", "Total", "Rate", "In", "Out", "Out/s", "Mean", "p50", "p95", "Tt mean",
                ],
            ));
            o.push_str("<tbody>");
            for m in models {
                let mname = m["name"].as_str().unwrap_or_default();
                let cells = [
                    n(&m["requests"]),
                    "-".into(),
                    n(&m["tokens_in"]),
                    n(&m["tokens_out"]),
                    "-".into(),
                    mean(&m["ttft_ms"]),
                    ms(&m["ttft_ms"]["p50"]),
                    ms(&m["ttft_ms"]["p95"]),
                    mean(&m["total_ms"]),
                ];
                o.push_str(&row(&format!("md/{name}/{mname}"), "", mname, &cells, None));
            }
            o.push_str("</tbody></table></div>");
        }
        o.push_str("</section>");
    }
    o
}

/// A nonce for the page's inline script and style: 128 random bits.
fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // Should the system's generator ever fail, a fixed nonce would still
    // allow nothing but the page's own elements.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The page for `doc` (the `/stats.json` document).
pub fn render(doc: &Value) -> Response<RespBody> {
    let nonce = nonce();
    let refresh_ms = doc["refresh_ms"].as_u64().unwrap_or(2000);
    let info = format!(
        "version {} · pid {} · up {}",
        doc["version"].as_str().unwrap_or_default(),
        n(&doc["pid"]),
        dur(&doc["uptime_s"])
    );
    // One pass over the template: a value filled in is never searched
    // for another slot (a model named `{{BOOT}}` stays a name).
    let mut out = String::with_capacity(TEMPLATE.len() + 64 * 1024);
    let mut rest = TEMPLATE;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        match &after[..j] {
            "NONCE" => out.push_str(&nonce),
            "REFRESH_S" => out.push_str(&refresh_ms.div_ceil(1000).to_string()),
            "INFO" => out.push_str(&esc(&info)),
            "LIVE" => out.push_str(&format!("snapshot, every {} s", refresh_ms as f64 / 1000.0)),
            "SNAPSHOT" => out.push_str(&snapshot(doc)),
            "BOOT" => out.push_str(&script_json(doc)),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);

    let mut r = Response::new(RespBody::full(out));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing but the page's own script and style runs; it may only talk
    // to this listener; no other site may frame it (clickjacking on the
    // admin controls).
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_match_the_script() {
        assert_eq!(n(&json!(1234567)), "1,234,567");
        assert_eq!(n(&json!(12)), "12");
        assert_eq!(n(&Value::Null), "-");
        assert_eq!(bytes(&json!(512)), "512 B");
        assert_eq!(bytes(&json!(1536)), "1.5 KiB");
        assert_eq!(dur(&json!(59)), "59s");
        assert_eq!(dur(&json!(3725)), "1h2m");
        assert_eq!(dur(&json!(90061)), "1d1h");
        assert_eq!(ms(&json!(3.25)), "3.3 ms");
        assert_eq!(ms(&json!(175.0)), "175 ms");
    }

    #[test]
    fn client_text_is_escaped_everywhere() {
        let evil = "</script><script>alert(1)</script>{{NONCE}}";
        let doc = json!({
            "version": "0", "pid": 1, "uptime_s": 0, "now_ms": 0, "refresh_ms": 2000,
            "auth": {"users": false, "read_auth": false, "admin": false},
            "frontends": [],
            "backends": [{
                "name": "b", "balance": "RoundRobin", "status": "UP", "class": "up",
                "queue": {}, "traffic": {}, "servers": [],
                "models": [{"name": evil, "requests": 1, "ttft_ms": {}, "total_ms": {}}],
            }],
        });
        let r = render(&doc);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        let body = match r.into_body().into_full() {
            Some(b) => String::from_utf8(b.to_vec()).unwrap(),
            None => panic!("not a full body"),
        };
        assert!(!body.contains("<script>alert"), "{body}");
        assert!(body.contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
        assert!(body.contains("\\u003c/script\\u003e"));
        // The slot name inside a value was not filled in.
        assert!(body.contains("{{NONCE}}"));
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        assert_eq!(nonce.len(), 32);
        assert_eq!(body.matches(&format!("nonce=\"{nonce}\"")).count(), 2);
        assert!(!body.contains("{{SNAPSHOT}}") && !body.contains("{{BOOT}}"));
    }
}
