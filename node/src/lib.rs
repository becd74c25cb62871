//! llmgw: an LLM API gateway node — HAProxy-grade proxying built for LLM
//! traffic. The modules follow a request's path: `listen` accepts it,
//! `threads` hands it to the serving thread with the fewest connections,
//! `http` serves it, `route` picks a backend (reading the body's model only
//! when a rule needs it), `balance` picks a server, `upstream` forwards it
//! over a pooled connection, and the response streams back untouched.
//! `config` is the immutable snapshot all of this reads; `runtime` is the
//! state that outlives reloads; `health` measures servers (active checks)
//! and helps the request path report what it saw (passive observation).

pub mod admin;
pub mod balance;
pub mod config;
pub mod control;
pub mod gateway;
pub mod health;
pub mod http;
pub mod keys;
pub mod listen;
pub mod llm;
pub mod logs;
pub mod metrics;
pub mod mock;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod stats;
pub mod stick;
pub mod systemd;
pub mod tcp;
pub mod threads;
pub mod upstream;
