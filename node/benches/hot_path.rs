//! Micro-benchmarks of the decisions every request pays for: finding the
//! body's `model` (1 KiB, 64 KiB and 1 MiB bodies, model first or last),
//! choosing a backend from content-switching rules, and choosing a server.
//! Run with `cargo bench -p llmgw`; compare runs on the same machine only.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llmgw::balance::{Balancer, PickCtx};
use llmgw::config::{native, Balance, HashType};
use llmgw::llm::model::{ModelScanner, Scan};
use llmgw::route::{select, Facts};
use llmgw::runtime::ServerState;

fn body(size: usize, model_first: bool) -> Vec<u8> {
    let filler = "x".repeat(size.saturating_sub(120));
    let s = if model_first {
        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{filler}"}}]}}"#)
    } else {
        format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"gpt-4o-mini"}}"#)
    };
    s.into_bytes()
}

fn model_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("model_scan");
    for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        for first in [true, false] {
            let b = body(size, first);
            g.throughput(Throughput::Bytes(b.len() as u64));
            let id = BenchmarkId::new(if first { "model_first" } else { "model_last" }, label);
            g.bench_with_input(id, &b, |bench, b| {
                bench.iter(|| {
                    let mut s = ModelScanner::default();
                    let found = matches!(s.scan(black_box(b)), Scan::Found(_));
                    assert!(found);
                })
            });
        }
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let cfg = r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "vllm"
[[frontend.route]]
backend = "anthropic"
path = "/v1/messages"
[[frontend.route]]
backend = "anthropic"
model = "claude-*"
[[frontend.route]]
backend = "openai"
model_regex = "^(gpt-|o[0-9]|text-embedding-)"
[[backend]]
name = "openai"
[[backend]]
name = "anthropic"
[[backend]]
name = "vllm"
"#;
    let config = native::load_str("bench.toml", cfg, Path::new(".")).expect("bench config");
    let fe = &config.frontends[0];
    let (parts, _) = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "gw.example")
        .body(())
        .expect("request")
        .into_parts();
    let src: IpAddr = [10, 0, 0, 1].into();
    let mut g = c.benchmark_group("route");
    for model in ["claude-sonnet-4-5", "gpt-4o-mini", "llama-3-8b"] {
        g.bench_function(model, |b| {
            b.iter(|| {
                let facts = Facts {
                    parts: &parts,
                    src,
                    model: Some(black_box(model)),
                    tracked: None,
                };
                black_box(select(fe, &facts))
            })
        });
    }
    g.finish();
}

fn balance(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    let mut g = c.benchmark_group("balance");
    for (label, algo, hash) in [
        ("roundrobin", Balance::RoundRobin, HashType::MapBased),
        ("leastconn", Balance::LeastConn, HashType::MapBased),
        ("random2", Balance::Random(2), HashType::MapBased),
        ("uri_map", Balance::Uri, HashType::MapBased),
        ("uri_consistent", Balance::Uri, HashType::Consistent),
    ] {
        let servers = (0..8)
            .map(|i| {
                (
                    Arc::new(ServerState::new("b", &format!("s{i}"), 1 + i % 3, 0)),
                    1 + i % 3,
                )
            })
            .collect();
        let balancer = Balancer::new(&algo, hash, servers);
        let mut n = 0u32;
        g.bench_function(label, |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let path = if n.is_multiple_of(2) {
                    "/v1/chat/completions"
                } else {
                    "/v1/embeddings"
                };
                let ctx = PickCtx {
                    src: [10, 0, 0, (n % 200) as u8].into(),
                    path,
                    headers: &headers,
                };
                black_box(balancer.pick(&ctx, &[]))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, model_scan, route, balance);
criterion_main!(benches);
