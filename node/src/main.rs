//! `llmgw`: the LLM API gateway node.

#![allow(dead_code)]

mod balance;
mod config;
mod mock;
mod runtime;

fn main() {}
