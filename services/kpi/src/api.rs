//! The gRPC face of the kpi service.

use futures::{Stream, StreamExt};
use std::pin::Pin;
use tonic::{Request, Response, Status};
use touchstone_api::common::v1::Event;
use touchstone_api::kpi::v1 as pb;
use touchstone_api::kpi::v1::kpi_service_server::KpiService;
use touchstone_auth::{Caller, Role};
use touchstone_platform::db::Db;
use touchstone_platform::outbox;

/// The kpi service.
#[derive(Debug, Clone)]
pub struct Kpi {
    db: Db,
}

impl Kpi {
    /// The service over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl KpiService for Kpi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let feed = outbox::feed_scope(&caller, caller.has_any(&[Role::Service, Role::AgencyAdmin]))
            .map_err(Status::permission_denied)?;
        let size = touchstone_list::page_size(req.page_size)
            .map_err(|e| Status::invalid_argument(e.description))?;
        let events = outbox::list(&self.db, &feed, req.after_sequence.max(0), size as i64)
            .await
            .map_err(|_| Status::unavailable("database"))?;
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let feed = outbox::feed_scope(&caller, caller.has_any(&[Role::Service, Role::AgencyAdmin]))
            .map_err(Status::permission_denied)?;
        let stream = outbox::watch(self.db.clone(), feed, req.after_sequence.max(0))
            .map(|item| item.map_err(|_| Status::unavailable("database")));
        Ok(Response::new(Box::pin(stream)))
    }
}
