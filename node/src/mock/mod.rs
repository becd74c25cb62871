//! The mock LLM provider (being written on its own branch; this placeholder
//! keeps the crate building).

use std::net::SocketAddr;

#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: Vec<SocketAddr>,
}

pub fn run(_args: MockArgs) -> std::io::Result<()> {
    Err(std::io::Error::other("not yet"))
}

pub async fn spawn_builtin() -> std::io::Result<SocketAddr> {
    Err(std::io::Error::other("not yet"))
}
