//! gRPC over kefu's own TLS (when `tls` is configured): the certificate of the HTTP port, with
//! its SIGHUP reload and ACME renewal, since both ports share one [`Certificates`] resolver. Each
//! handshake runs in a task of its own, so a slow client never holds up the others.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::tls::Certificates;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished, waiting for the gRPC server to take them; a burst of
/// handshakes waits here rather than in memory without bound.
const READY_QUEUE: usize = 64;

/// The TLS acceptor of the gRPC port: kefu's certificates, offering HTTP/2 only (gRPC clients ask
/// for `h2` and refuse a server that answers without it).
pub fn acceptor(certificates: Arc<Certificates>) -> Result<TlsAcceptor, crate::net::tls::TlsError> {
    Ok(TlsAcceptor::from(Arc::new(crate::net::tls::grpc_server_config(certificates)?)))
}

/// Accepts TCP connections on `listener` and hands on those whose TLS handshake succeeds, until
/// `shutdown`; a failed handshake is logged at debug level and forgotten.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let (ready, connections) = mpsc::channel(READY_QUEUE);
    tasks.spawn(async move {
        let mut handshakes = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ready.closed() => break,
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            handshakes.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(TlsConnection(stream))).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "a gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "a gRPC TLS handshake timed out"),
                }
            });
        }
        handshakes.shutdown().await;
    });
    tokio_stream::wrappers::ReceiverStream::new(connections)
}

/// A gRPC connection over TLS (tonic needs to know its peer's address).
pub struct TlsConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(context)
    }
}
