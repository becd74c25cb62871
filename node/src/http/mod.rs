//! HTTP towards clients: the per-connection server, the request path, the
//! bodies that cross the gateway and the errors it answers with itself.

pub mod body;
pub mod conn;
pub mod error;
pub mod h1;
pub mod proxy;
pub mod tunnel;
