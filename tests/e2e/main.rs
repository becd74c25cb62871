//! End-to-end tests: the real `llmgw` binary as gateway and as mock
//! provider, on ephemeral loopback ports.

mod access_log;
mod balancing;
mod client_keys;
mod cluster;
mod config_errors;
mod conn_limits;
mod differential;
mod early_answer;
mod errors;
mod fallback;
mod h1_engine;
mod h2_attacks;
mod h2_to_h1;
mod haproxy;
mod health;
mod listeners;
mod metrics;
mod reload;
mod retry;
mod rewriting;
mod routing;
mod runtime_api;
mod sdk;
mod slowloris;
mod smuggling;
mod stats_page;
mod stick;
mod streaming;
mod tcp;
mod threads;
