//! Upgraded connections (WebSocket, e.g. realtime LLM APIs): once both sides
//! have switched protocols, bytes are copied both ways until either side
//! closes or nothing moves for `timeout tunnel`.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::conn::{Activity, Tracked};
use crate::runtime::ActiveGuard;

pub async fn run(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, _guard: ActiveGuard) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let activity = Arc::new(Activity::new());
    let mut client = Tracked::new(TokioIo::new(client), activity.clone());
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let mut wake = Box::pin(tokio::time::sleep(idle));
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = &mut wake => {
                let quiet = activity.idle_for();
                if quiet >= idle {
                    tracing::debug!("tunnel closed after {idle:?} of inactivity");
                    return;
                }
                wake.as_mut().reset(Instant::now() + (idle - quiet));
            }
        }
    }
}
