//! The baseline: a bare tonic server with one unary method that returns its
//! request, served by plain `tonic::transport::Server` with none of
//! Touchstone's layers (no auth, metrics, shedding, database). Written by
//! hand because the build has no proto for it; it reuses the register's
//! `Client` message so that the bytes on the wire match a CreateClient.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use touchstone_api::register::v1 as pb;

const SERVICE: &str = "touchstone.bench.v1.EchoService";
const METHOD: &str = "/touchstone.bench.v1.EchoService/Echo";

#[derive(Clone, Debug, Default)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

struct Echo;

impl UnaryService<pb::Client> for Echo {
    type Response = pb::Client;
    type Future = Ready<Result<Response<pb::Client>, Status>>;

    fn call(&mut self, request: Request<pb::Client>) -> Self::Future {
        ready(Ok(Response::new(request.into_inner())))
    }
}

impl Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != METHOD {
            return Box::pin(ready(Ok(Status::unimplemented("").into_http())));
        }
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<pb::Client, pb::Client>::default();
            Ok(tonic::server::Grpc::new(codec).unary(Echo, request).await)
        })
    }
}

/// A running echo server.
pub(super) struct EchoHandle {
    pub(super) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoHandle {
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// Starts the echo server on 127.0.0.1, on a free port.
pub(super) async fn start() -> anyhow::Result<EchoHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Same socket option the register's accept loop sets.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.await;
            }),
    );
    Ok(EchoHandle { addr, stop, task })
}

/// A client of the echo method over one channel.
#[derive(Clone, Debug)]
pub(super) struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    pub(super) fn new(channel: Channel) -> Self {
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub(super) async fn echo(
        &mut self,
        request: Request<pb::Client>,
    ) -> Result<Response<pb::Client>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<pb::Client, pb::Client>::default();
        self.grpc
            .unary(request, PathAndQuery::from_static(METHOD), codec)
            .await
    }
}
