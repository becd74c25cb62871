//! The mutual-TLS sockets under tonic: [`TlsIncoming`] accepts connections
//! for a server, [`TlsConnector`] opens them for a channel.
//!
//! TLS happens here, below tonic, rather than through tonic's own TLS
//! options: this way the rustls configurations are ours (explicit provider,
//! TLS 1.3 only), the server learns the peer's identity once per connection
//! and hands it to every request as a [`PeerInfo`], and the client checks
//! that the server is the node it meant to reach. Channels therefore use
//! `http://` URIs: tonic sees an already encrypted stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use super::{PeerIdentity, PeerInfo, TlsError};
use crate::types::NodeId;

/// How long a peer has to complete its handshake once connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener; more connections wait
/// in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Connections handshaken but not yet taken by the server.
const ACCEPTED_QUEUE: usize = 64;

/// Which server a client accepts at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectPeer {
    /// Exactly this node (Raft: a peer is reached under its id).
    Node(NodeId),
    /// Any node of the cluster (`llmgw-ctl`, which talks to whichever node
    /// it was pointed at).
    AnyNode,
}

impl ExpectPeer {
    fn check(self, found: &PeerIdentity) -> Result<(), String> {
        match (self, found) {
            (ExpectPeer::Node(want), PeerIdentity::Node(id)) if want == *id => Ok(()),
            (ExpectPeer::AnyNode, PeerIdentity::Node(_)) => Ok(()),
            (ExpectPeer::Node(want), other) => Err(format!(
                "the server's certificate is {other}, not node n{want}"
            )),
            (ExpectPeer::AnyNode, other) => {
                Err(format!("the server's certificate is {other}, not a node's"))
            }
        }
    }
}

/// Timeouts and keepalives of a channel.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// TCP connect and TLS handshake together.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on an idle connection, so a black-holed peer is
    /// noticed instead of hanging a call.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// A channel to `addr` over mutual TLS, connecting on first use and again
/// after a failure.
pub fn channel(
    config: Arc<ClientConfig>,
    addr: &str,
    expect: ExpectPeer,
    opts: &ChannelOptions,
) -> Result<Channel, TlsError> {
    Ok(endpoint(addr, opts)?.connect_with_connector_lazy(TlsConnector::new(config, expect)))
}

fn endpoint(addr: &str, opts: &ChannelOptions) -> Result<Endpoint, TlsError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| TlsError::Address(format!("'{addr}' is not host:port: {e}")))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(TlsError::Address(format!("'{addr}' has no port")));
    }
    Ok(endpoint
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// Connects over TCP, does the TLS handshake, and checks that the server's
/// certificate names the node expected.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    expect: ExpectPeer,
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>, expect: ExpectPeer) -> TlsConnector {
        TlsConnector { config, expect }
    }
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        let expect = self.expect;
        Box::pin(async move {
            let (host, port) = host_port(&uri)?;
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("'{host}' is not a host name: {e}"),
                )
            })?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("TLS handshake with {host}:{port}: {e}"))
                })?;
            let identity = {
                let (_, conn) = tls.get_ref();
                let leaf = conn
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .ok_or_else(|| io::Error::other("the server sent no certificate"))?;
                PeerIdentity::of_certificate(leaf).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("{host}:{port}: {e}"),
                    )
                })?
            };
            expect.check(&identity).map_err(|msg| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host}:{port}: {msg}"),
                )
            })?;
            Ok(TokioIo::new(tls))
        })
    }
}

fn host_port(uri: &Uri) -> io::Result<(String, u16)> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    // An IPv6 literal comes bracketed; connect and the server name want it bare.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    Ok((host.to_string(), port))
}

/// A mutual-TLS connection accepted by [`TlsIncoming`], with its peer.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections of a listener, each handshaken (with a deadline, many
/// at once) and authenticated before the server sees it. A peer without a
/// certificate from the cluster CA, or whose certificate names no llmgw
/// identity, never reaches a service.
///
/// Dropping the stream (the server stopping) stops accepting and closes
/// the listener.
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsConn>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> TlsIncoming {
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            tx,
        ));
        TlsIncoming { rx }
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<TlsConn>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or memory: pausing lets connections
                // close instead of spinning on the same error.
                tracing::warn!("cluster listener: accept failed: {e}");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, "cluster listener: TCP_NODELAY: {e}");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, "cluster listener: TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        %remote,
                        "cluster listener: TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"
                    );
                    return;
                }
            };
            let identity = {
                let (_, conn) = stream.get_ref();
                match conn.peer_certificates().and_then(|certs| certs.first()) {
                    Some(leaf) => PeerIdentity::of_certificate(leaf),
                    None => Err(TlsError::Identity("no client certificate".into())),
                }
            };
            let identity = match identity {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::warn!(%remote, "cluster listener: peer refused: {e}");
                    return;
                }
            };
            tracing::debug!(%remote, peer = %identity, "cluster listener: peer authenticated");
            let conn = TlsConn {
                stream,
                info: PeerInfo {
                    identity,
                    remote_addr: Some(remote),
                },
            };
            // Fails only when the server stopped meanwhile.
            let _ = tx.send(conn).await;
        });
    }
}
