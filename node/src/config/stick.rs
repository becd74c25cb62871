//! The schema of a stick table: what it stores per key (HAProxy's `store`
//! names, plus llmgw's token rates) and over which periods. The tables
//! themselves live in `crate::stick`; the readers validate `store` lists
//! here so a bad one is a `file:line` error.

/// What a table stores for each key (HAProxy's `store` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Data {
    ConnCur,
    ConnCnt,
    ConnRate,
    HttpReqCnt,
    HttpReqRate,
    HttpErrCnt,
    HttpErrRate,
    BytesInCnt,
    BytesInRate,
    BytesOutCnt,
    BytesOutRate,
    /// General purpose counter N (`gpc0`, `gpc(n)`).
    Gpc(u8),
    GpcRate(u8),
    /// HAProxy's sessions: connections accepted (tracked like `conn_*`).
    SessCnt,
    SessRate,
    /// Requests that failed on the server side (5xx other than 501/505).
    HttpFailCnt,
    HttpFailRate,
    /// General purpose tag (`gpt0`): set, not added to.
    Gpt0,
    ServerId,
    /// LLM tokens, from the `usage` of responses.
    TokensInRate,
    TokensOutRate,
    TokensRate,
}

impl Data {
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            Data::ConnRate
                | Data::HttpReqRate
                | Data::HttpErrRate
                | Data::BytesInRate
                | Data::BytesOutRate
                | Data::GpcRate(_)
                | Data::SessRate
                | Data::HttpFailRate
                | Data::TokensInRate
                | Data::TokensOutRate
                | Data::TokensRate
        )
    }

    /// Token rates, fed from the `usage` of responses.
    pub fn is_tokens(self) -> bool {
        matches!(
            self,
            Data::TokensInRate | Data::TokensOutRate | Data::TokensRate
        )
    }

    /// Byte counts and rates, fed from request and response bodies.
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Data::BytesInCnt | Data::BytesInRate | Data::BytesOutCnt | Data::BytesOutRate
        )
    }

    /// The data an `scN_<name>` fetch reads (`conn_rate`, `gpc0`, …).
    pub fn from_fetch(name: &str) -> Option<Data> {
        // `sc0_get_gpt0`, `sc0_get_gpc0`: HAProxy's names for reading a tag
        // or counter without touching it (reads never touch here).
        let name = name.strip_prefix("get_").unwrap_or(name);
        FETCHABLE.iter().copied().find(|d| d.name() == name)
    }

    /// The `store` entry a table needs for this data (rates over 10 s), as
    /// a `--lenient` repair declares it.
    pub fn store_entry(self) -> String {
        if self.is_rate() {
            format!("{}(10s)", self.name())
        } else {
            self.name()
        }
    }

    /// HAProxy's name, as `show table` prints it.
    pub fn name(self) -> String {
        match self {
            Data::ConnCur => "conn_cur".into(),
            Data::ConnCnt => "conn_cnt".into(),
            Data::ConnRate => "conn_rate".into(),
            Data::HttpReqCnt => "http_req_cnt".into(),
            Data::HttpReqRate => "http_req_rate".into(),
            Data::HttpErrCnt => "http_err_cnt".into(),
            Data::HttpErrRate => "http_err_rate".into(),
            Data::BytesInCnt => "bytes_in_cnt".into(),
            Data::BytesInRate => "bytes_in_rate".into(),
            Data::BytesOutCnt => "bytes_out_cnt".into(),
            Data::BytesOutRate => "bytes_out_rate".into(),
            Data::Gpc(n) => format!("gpc{n}"),
            Data::GpcRate(n) => format!("gpc{n}_rate"),
            Data::SessCnt => "sess_cnt".into(),
            Data::SessRate => "sess_rate".into(),
            Data::HttpFailCnt => "http_fail_cnt".into(),
            Data::HttpFailRate => "http_fail_rate".into(),
            Data::Gpt0 => "gpt0".into(),
            Data::ServerId => "server_id".into(),
            Data::TokensInRate => "tokens_in_rate".into(),
            Data::TokensOutRate => "tokens_out_rate".into(),
            Data::TokensRate => "tokens_rate".into(),
        }
    }
}

/// Every data an `scN_*` fetch can name.
pub const FETCHABLE: [Data; 24] = [
    Data::ConnCur,
    Data::ConnCnt,
    Data::ConnRate,
    Data::HttpReqCnt,
    Data::HttpReqRate,
    Data::HttpErrCnt,
    Data::HttpErrRate,
    Data::BytesInCnt,
    Data::BytesInRate,
    Data::BytesOutCnt,
    Data::BytesOutRate,
    Data::Gpc(0),
    Data::Gpc(1),
    Data::GpcRate(0),
    Data::GpcRate(1),
    Data::SessCnt,
    Data::SessRate,
    Data::HttpFailCnt,
    Data::HttpFailRate,
    Data::Gpt0,
    Data::ServerId,
    Data::TokensInRate,
    Data::TokensOutRate,
    Data::TokensRate,
];

/// One `store` entry: what, and over which period for a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub data: Data,
    /// Milliseconds; 0 for a counter.
    pub period_ms: u64,
}

/// Parses a `store` list (`conn_rate(10s)`, `gpc(2)`, `gpc_rate(2,10s)`,
/// `gpc0`, `tokens_rate(1m)`, …). Errors name the entry.
pub fn parse_store(entries: &[String]) -> Result<Vec<Column>, String> {
    let mut cols: Vec<Column> = Vec::new();
    for e in entries {
        let (name, arg) = match e.split_once('(') {
            Some((n, rest)) => match rest.strip_suffix(')') {
                Some(a) => (n, Some(a)),
                None => return Err(format!("stick-table data '{e}': missing ')'")),
            },
            None => (e.as_str(), None),
        };
        let period = |a: Option<&str>| -> Result<u64, String> {
            let a = a.ok_or_else(|| {
                format!("stick-table data '{e}' needs a period, e.g. {name}(10s)")
            })?;
            match crate::config::units::parse_duration(a) {
                Ok(d) if !d.is_zero() => Ok(d.as_millis() as u64),
                _ => Err(format!("stick-table data '{e}': invalid period '{a}'")),
            }
        };
        let count = |a: Option<&str>| -> Result<u8, String> {
            match a.map(str::parse::<u8>) {
                Some(Ok(n)) if (1..=100).contains(&n) => Ok(n),
                _ => Err(format!(
                    "stick-table data '{e}' needs a number of counters 1..100, e.g. gpc(2)"
                )),
            }
        };
        let mut push = |data: Data, period_ms: u64| {
            if !cols.iter().any(|c| c.data == data) {
                cols.push(Column { data, period_ms });
            }
        };
        let plain = |data: Data| -> Result<Data, String> {
            match arg {
                None => Ok(data),
                Some(_) => Err(format!("stick-table data '{e}' takes no argument")),
            }
        };
        match name {
            "conn_cur" => push(plain(Data::ConnCur)?, 0),
            "conn_cnt" => push(plain(Data::ConnCnt)?, 0),
            "http_req_cnt" => push(plain(Data::HttpReqCnt)?, 0),
            "http_err_cnt" => push(plain(Data::HttpErrCnt)?, 0),
            "bytes_in_cnt" => push(plain(Data::BytesInCnt)?, 0),
            "bytes_out_cnt" => push(plain(Data::BytesOutCnt)?, 0),
            "gpc0" => push(plain(Data::Gpc(0))?, 0),
            "gpc1" => push(plain(Data::Gpc(1))?, 0),
            "sess_cnt" => push(plain(Data::SessCnt)?, 0),
            "http_fail_cnt" => push(plain(Data::HttpFailCnt)?, 0),
            "gpt0" => push(plain(Data::Gpt0)?, 0),
            "server_id" => push(plain(Data::ServerId)?, 0),
            "sess_rate" => push(Data::SessRate, period(arg)?),
            "http_fail_rate" => push(Data::HttpFailRate, period(arg)?),
            "conn_rate" => push(Data::ConnRate, period(arg)?),
            "http_req_rate" => push(Data::HttpReqRate, period(arg)?),
            "http_err_rate" => push(Data::HttpErrRate, period(arg)?),
            "bytes_in_rate" => push(Data::BytesInRate, period(arg)?),
            "bytes_out_rate" => push(Data::BytesOutRate, period(arg)?),
            "gpc0_rate" => push(Data::GpcRate(0), period(arg)?),
            "gpc1_rate" => push(Data::GpcRate(1), period(arg)?),
            "tokens_in_rate" => push(Data::TokensInRate, period(arg)?),
            "tokens_out_rate" => push(Data::TokensOutRate, period(arg)?),
            "tokens_rate" => push(Data::TokensRate, period(arg)?),
            "gpc" => {
                for i in 0..count(arg)? {
                    push(Data::Gpc(i), 0);
                }
            }
            "gpc_rate" => {
                let (n, p) = arg.and_then(|a| a.split_once(',')).ok_or_else(|| {
                    format!(
                        "stick-table data '{e}' needs a count and a period, e.g. gpc_rate(2,10s)"
                    )
                })?;
                let p = period(Some(p.trim()))?;
                for i in 0..count(Some(n.trim()))? {
                    push(Data::GpcRate(i), p);
                }
            }
            _ => return Err(format!("unknown stick-table data '{e}'")),
        }
    }
    Ok(cols)
}

/// Splits a `store` value at the commas between entries, not those inside
/// an entry's parentheses (`gpc_rate(2,10s),conn_cur`).
pub fn split_store(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in v.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(v[start..i].to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].to_owned());
    out.retain(|s| !s.is_empty());
    out
}
