//! The gRPC edge: unpacks requests, forwards them to the event loop as [`Event`]s and maps the
//! answers back. Version and token are checked by the [`Guard`] interceptor before any handler.

use crate::state::Event;
use airlift_proto::auth::Guard;
use airlift_proto::pb::{
    self,
    coordinator_server::{Coordinator, CoordinatorServer},
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// The Coordinator service.
pub struct CoordinatorService {
    events: mpsc::Sender<Event>,
}

/// The service wrapped in its guard.
pub fn service(events: mpsc::Sender<Event>, guard: Guard) -> InterceptedService<CoordinatorServer<CoordinatorService>, Guard> {
    InterceptedService::new(CoordinatorServer::new(CoordinatorService { events }), guard)
}

fn gone() -> Status {
    Status::unavailable("the coordinator is shutting down")
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::Register {
                req: request.into_inner(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map(Response::new)
    }

    type AttachStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn attach(&self, request: Request<Streaming<pb::WorkerMessage>>) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("attach: the stream must start with a message carrying the worker id"))??;
        let worker_id = airlift_proto::WorkerId(first.worker_id);
        let (tx, rx) = mpsc::channel(64);
        self.events.send(Event::Attach { worker_id, outbox: tx }).await.map_err(|_| gone())?;
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(Event::Message { worker_id, msg: first }).await;
            while let Some(Ok(msg)) = inbound.next().await {
                if events.send(Event::Message { worker_id, msg }).await.is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Detached { worker_id }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_task(&self, request: Request<pb::TaskReport>) -> Result<Response<pb::TaskAck>, Status> {
        let (reply, rx) = oneshot::channel();
        self.events
            .send(Event::Report {
                report: request.into_inner(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map(Response::new)
    }

    async fn run_status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::Status { reply }).await.map_err(|_| gone())?;
        Ok(Response::new(rx.await.map_err(|_| gone())?))
    }
}
