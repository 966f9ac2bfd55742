//! The gRPC face of the register: each handler parses its request into
//! domain types, checks the caller, runs the change in one transaction (with
//! its idempotency record, audit record and outbox event), and maps back.
//! No SQL here.

use crate::domain::{self, Action, ClientFields, NeedFields};
use crate::error::Error;
use crate::store::{self, ClientRecord, ConsentChange, NeedRecord};
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use touchstone_api::Named;
use touchstone_api::common::v1::Event;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_server::RegisterService;
use touchstone_auth::{Caller, Target, authorize};
use touchstone_crypto::{DataKey, MasterKey, normalise};
use touchstone_list::{ListError, ListParams, ListQuery};
use touchstone_platform::audit::{self, Access};
use touchstone_platform::change::{self, Begun};
use touchstone_platform::db::{Db, Scope, Tx};
use touchstone_platform::error::FieldViolation;
use touchstone_platform::idempotency;
use touchstone_platform::keyring::Keyring;
use touchstone_platform::outbox;
use touchstone_platform::{names, times};

/// Most results of one search.
const SEARCH_LIMIT: i64 = 100;

/// The register service.
#[derive(Debug, Clone)]
pub struct Register {
    db: Db,
    keys: Arc<Keyring>,
}

impl Register {
    /// A register over `db`, encrypting with data keys stored in `db` and
    /// wrapped by `master`.
    pub fn new(db: Db, master: MasterKey) -> Self {
        let keys = Arc::new(Keyring::new(master, db.clone()));
        Self { db, keys }
    }

    /// The agency's data key, read in `tx` (DESIGN §5).
    async fn key(&self, tx: &mut Tx, agency: &str) -> Result<Arc<DataKey>, Error> {
        Ok(self.keys.data_key(tx, agency).await?)
    }
}

fn list_error(e: ListError) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(e.field, e.description)])
}

fn parse_name<'a>(field: &str, pattern: &str, value: &'a str) -> Result<Vec<&'a str>, Error> {
    names::parse(pattern, value, false).map_err(|e| Error::invalid(field, e.0))
}

fn parse_agency<'a>(field: &str, parent: &'a str) -> Result<&'a str, Error> {
    Ok(parse_name(field, "agencies/{}", parent)?[0])
}

fn chosen_id(field: &str, id: &str) -> Result<String, Error> {
    names::chosen_id(field, id).map_err(|v| Error::InvalidArgument(vec![v]))
}

fn etag(revision: i64) -> String {
    revision.to_string()
}

fn consents(history: &[ConsentChange]) -> Vec<pb::Consent> {
    let mut latest: BTreeMap<i32, &ConsentChange> = BTreeMap::new();
    for c in history {
        latest.insert(c.purpose, c);
    }
    latest
        .values()
        .map(|c| pb::Consent {
            purpose: c.purpose,
            granted: c.granted,
            change_time: Some(times::timestamp(c.change_time)),
        })
        .collect()
}

fn client_to_proto(r: &ClientRecord, history: &[ConsentChange]) -> pb::Client {
    let f = &r.fields;
    let p = &f.personal;
    let ch = p.characteristics;
    pb::Client {
        name: r.name(),
        kind: f.kind,
        given_names: p.given_names.clone(),
        family_name: p.family_name.clone(),
        preferred_name: p.preferred_name.clone(),
        organisation_name: p.organisation_name.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
        postal_address: p.postal_address.as_ref().map(|a| pb::PostalAddress {
            address_lines: a.lines.clone(),
            locality: a.locality.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            region_code: a.region_code.clone(),
        }),
        preferred_channel: f.preferred_channel,
        preferred_language: f.preferred_language.clone(),
        interpreter_needed: f.interpreter_needed,
        accessibility_needs: f.accessibility_needs.clone(),
        accessibility_notes: p.accessibility_notes.clone(),
        characteristics: (!r.erased).then_some(pb::Characteristics {
            age_band: ch.age_band,
            gender: ch.gender,
            disability: ch.disability,
            first_nations: ch.first_nations,
            culturally_linguistically_diverse: ch.culturally_linguistically_diverse,
            remote_location: ch.remote_location,
        }),
        external_references: p
            .external_references
            .iter()
            .map(|(system, id)| pb::ExternalReference {
                system: system.clone(),
                id: id.clone(),
            })
            .collect(),
        consents: consents(history),
        create_time: Some(times::timestamp(r.create_time)),
        update_time: Some(times::timestamp(r.update_time)),
        etag: etag(r.revision),
        erased: r.erased,
        erase_time: times::timestamp_opt(r.erase_time),
    }
}

fn need_to_proto(r: &NeedRecord) -> pb::Need {
    pb::Need {
        name: r.name(),
        category: r.fields.category.clone(),
        description: r.fields.personal.description.clone(),
        agreed_service_option: r.fields.personal.agreed_service_option.clone(),
        status: r.fields.status,
        next_review_date: r.fields.next_review_date.map(times::date_from_key),
        create_time: Some(times::timestamp(r.create_time)),
        update_time: Some(times::timestamp(r.update_time)),
        etag: etag(r.revision),
    }
}

fn access<'a>(
    caller: &'a Caller,
    agency: &'a str,
    action: &'a str,
    resource: &'a str,
    request_id: &'a str,
) -> Access<'a> {
    Access {
        agency,
        actor: &caller.subject,
        action,
        resource,
        request_id,
    }
}

impl Register {
    /// Opens the write transaction of a state-changing call and claims its
    /// request id.
    async fn begin<'a, R: prost::Message + Default + Named>(
        &self,
        caller: &'a Caller,
        agency: &'a str,
        method: &'static str,
        request_id: &'a str,
        fingerprint: String,
    ) -> Result<Begun<'a, R>, Error> {
        Ok(change::begin(
            &self.db,
            &self.keys,
            caller,
            agency,
            method,
            request_id,
            fingerprint,
        )
        .await?)
    }
}

/// Loads a client for a change, locking its row until commit (PostgreSQL) so
/// that a concurrent erasure cannot interleave with the change.
/// Loads and locks a client that a change may still touch: erased clients
/// take no new personal data.
async fn lock_live_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<ClientRecord, Error> {
    let client = lock_client(tx, key, agency, id).await?;
    not_erased(&client)?;
    Ok(client)
}

async fn lock_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<ClientRecord, Error> {
    store::get_client_for_update(tx, key, agency, id)
        .await?
        .ok_or(Error::NotFound("client"))
}

async fn load_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<ClientRecord, Error> {
    store::get_client(tx, key, agency, id)
        .await?
        .ok_or(Error::NotFound("client"))
}

async fn history_of(tx: &mut Tx, agency: &str, id: &str) -> Result<Vec<ConsentChange>, Error> {
    Ok(store::consent_histories(tx, agency, &[id])
        .await?
        .remove(id)
        .unwrap_or_default())
}

fn check_etag(given: &str, revision: i64) -> Result<(), Error> {
    if !given.is_empty() && given != etag(revision) {
        return Err(Error::StaleEtag);
    }
    Ok(())
}

fn not_erased(r: &ClientRecord) -> Result<(), Error> {
    if r.erased {
        return Err(Error::FailedPrecondition {
            reason: "CLIENT_ERASED",
            message: "the client was erased",
        });
    }
    Ok(())
}

type Reply<T> = Result<Response<T>, Status>;

impl Register {
    async fn consent(
        &self,
        caller: &Caller,
        req: &ConsentRequest<'_>,
        granted: bool,
        method: &'static str,
    ) -> Result<pb::Client, Error> {
        let [agency, id] = parse_name("name", "agencies/{}/clients/{}", req.name)?[..] else {
            return Err(Error::invalid(
                "name",
                "must have the form agencies/{a}/clients/{c}",
            ));
        };
        let purpose =
            domain::consent_purpose(req.purpose).map_err(|e| Error::invalid("purpose", e))?;
        if req.source.chars().count() > 100 {
            return Err(Error::invalid("source", "at most 100 characters"));
        }
        authorize(caller, Action::Write.roles(), agency, Target::Named)?;
        let mut change = match self
            .begin(
                caller,
                agency,
                method,
                req.request_id,
                req.fingerprint.clone(),
            )
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut record = lock_live_client(&mut change.tx, &change.key, agency, id).await?;
        let now = times::now_millis();
        let consent = ConsentChange {
            purpose,
            granted,
            change_time: now,
            actor: caller.subject.clone(),
            source: req.source.trim().to_string(),
        };
        store::insert_consent_change(&mut change.tx, agency, id, &consent).await?;
        store::touch_client(&mut change.tx, agency, id, now).await?;
        record.revision += 1;
        record.update_time = now;
        let name = record.name();
        change.event(
            &name,
            &pb::ConsentChanged {
                client: name.clone(),
                purpose,
                granted,
            },
        );
        let history = history_of(&mut change.tx, agency, id).await?;
        let response = client_to_proto(&record, &history);
        Ok(change.finish(&name, response).await?)
    }
}

struct ConsentRequest<'a> {
    name: &'a str,
    purpose: i32,
    source: &'a str,
    request_id: &'a str,
    fingerprint: String,
}

#[tonic::async_trait]
impl RegisterService for Register {
    #[tracing::instrument(skip_all)]
    async fn create_client(&self, request: Request<pb::CreateClientRequest>) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Write.roles(), agency, Target::Collection)?;
            let Some(client) = req.client.as_ref() else {
                return Err(Error::invalid("client", "required"));
            };
            let fields = ClientFields::parse(client, "client")?;
            let id = chosen_id("client_id", &req.client_id)?;
            let now = times::now_millis();
            // Only new rows: the whole change is one request (see
            // `change::write_new`).
            change::write_new(
                &self.db,
                &self.keys,
                &caller,
                agency,
                "CreateClient",
                &req.request_id,
                idempotency::fingerprint(&req),
                |key, s| {
                    let record = store::push_insert_client(s, key, agency, &id, &fields, now)?;
                    let name = record.name();
                    let event = outbox::Pending::new(&pb::ClientCreated {
                        client: name.clone(),
                    });
                    Ok::<_, Error>(change::Written {
                        response: client_to_proto(&record, &[]),
                        events: vec![(name.clone(), event)],
                        resource: name,
                    })
                },
                || Error::AlreadyExists("client"),
            )
            .await
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_client(&self, request: Request<pb::GetClientRequest>) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, id] = parse_name("name", "agencies/{}/clients/{}", &req.name)?[..] else {
                return Err(Error::invalid(
                    "name",
                    "must have the form agencies/{a}/clients/{c}",
                ));
            };
            authorize(&caller, Action::Read.roles(), agency, Target::Named)?;
            let mut tx = self.db.read_one(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let (record, history) = store::get_client_with_history(&mut tx, &key, agency, id)
                .await?
                .ok_or(Error::NotFound("client"))?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "GetClient", &req.name, ""),
                    &[&req.name],
                )
                .await?;
            Ok::<_, Error>(client_to_proto(&record, &history))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_client(&self, request: Request<pb::UpdateClientRequest>) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.client.as_ref() else {
                return Err(Error::invalid("client", "required"));
            };
            let [agency, id] =
                parse_name("client.name", "agencies/{}/clients/{}", &patch.name)?[..]
            else {
                return Err(Error::invalid(
                    "client.name",
                    "must have the form agencies/{a}/clients/{c}",
                ));
            };
            authorize(&caller, Action::Write.roles(), agency, Target::Named)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "UpdateClient",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let record = lock_live_client(&mut change.tx, &change.key, agency, id).await?;
            check_etag(&patch.etag, record.revision)?;
            let mask = req
                .update_mask
                .as_ref()
                .map(|m| m.paths.clone())
                .unwrap_or_default();
            let (fields, paths) = record.fields.apply_mask(patch, &mask)?;
            let now = times::now_millis();
            if !store::update_client(&mut change.tx, &change.key, &record, &fields, now).await? {
                return Err(Error::StaleEtag);
            }
            let updated = ClientRecord {
                fields,
                update_time: now,
                revision: record.revision + 1,
                ..record
            };
            let name = updated.name();
            change.event(
                &name,
                &pb::ClientUpdated {
                    client: name.clone(),
                    fields: paths,
                },
            );
            let history = history_of(&mut change.tx, agency, id).await?;
            let response = client_to_proto(&updated, &history);
            Ok(change.finish(&name, response).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Reply<pb::ListClientsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Collection)?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::CLIENT_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let (records, next_page_token) =
                store::list_clients(&mut tx, &key, agency, &query).await?;
            let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let mut histories = store::consent_histories(&mut tx, agency, &ids).await?;
            let names: Vec<String> = records.iter().map(ClientRecord::name).collect();
            tx.commit().await?;
            self.db
                .audit_reads(access(&caller, agency, "ListClients", "", ""), &names)
                .await?;
            let clients = records
                .iter()
                .map(|r| client_to_proto(r, &histories.remove(&r.id).unwrap_or_default()))
                .collect();
            Ok::<_, Error>(pb::ListClientsResponse {
                clients,
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn search_clients(
        &self,
        request: Request<pb::SearchClientsRequest>,
    ) -> Reply<pb::SearchClientsResponse> {
        use pb::search_clients_request::Query;
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Collection)?;
            let (kind, field, value) = match &req.query {
                None => {
                    return Err(Error::invalid(
                        "query",
                        "one of email, phone, external_reference or full_name is required",
                    ));
                }
                Some(Query::Email(e)) => (domain::SEARCH_EMAIL, "email", normalise::email(e)),
                Some(Query::Phone(p)) => (domain::SEARCH_PHONE, "phone", normalise::phone(p)),
                Some(Query::FullName(n)) => {
                    (domain::SEARCH_NAME, "full_name", normalise::full_name(n))
                }
                Some(Query::ExternalReference(r)) => {
                    if r.system.trim().is_empty() || r.id.trim().is_empty() {
                        return Err(Error::invalid(
                            "external_reference",
                            "system and id are required",
                        ));
                    }
                    (
                        domain::SEARCH_EXTERNAL,
                        "external_reference",
                        normalise::external_reference(&r.system, &r.id),
                    )
                }
            };
            if value.is_empty() || value.chars().count() > 400 {
                return Err(Error::invalid(field, "must be 1 to 400 characters"));
            }
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let records =
                store::search_clients(&mut tx, &key, agency, kind, &value, SEARCH_LIMIT).await?;
            let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let mut histories = store::consent_histories(&mut tx, agency, &ids).await?;
            let names: Vec<String> = records.iter().map(ClientRecord::name).collect();
            tx.commit().await?;
            self.db
                .audit_reads(access(&caller, agency, "SearchClients", "", ""), &names)
                .await?;
            let clients = records
                .iter()
                .map(|r| client_to_proto(r, &histories.remove(&r.id).unwrap_or_default()))
                .collect();
            Ok::<_, Error>(pb::SearchClientsResponse { clients })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn erase_client(&self, request: Request<pb::EraseClientRequest>) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, id] = parse_name("name", "agencies/{}/clients/{}", &req.name)?[..] else {
                return Err(Error::invalid(
                    "name",
                    "must have the form agencies/{a}/clients/{c}",
                ));
            };
            authorize(&caller, Action::Erase.roles(), agency, Target::Named)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "EraseClient",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            lock_client(&mut change.tx, &change.key, agency, id).await?;
            let now = times::now_millis();
            if store::erase_client(&mut change.tx, agency, id, now).await? {
                idempotency::forget_resource(&mut change.tx, agency, &req.name).await?;
                change.event(
                    &req.name,
                    &pb::ClientErased {
                        client: req.name.clone(),
                        erase_time: Some(times::timestamp(now)),
                    },
                );
            }
            let erased = load_client(&mut change.tx, &change.key, agency, id).await?;
            let history = history_of(&mut change.tx, agency, id).await?;
            let response = client_to_proto(&erased, &history);
            Ok(change.finish(&req.name, response).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn export_client(
        &self,
        request: Request<pb::ExportClientRequest>,
    ) -> Reply<pb::ExportClientResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, id] = parse_name("name", "agencies/{}/clients/{}", &req.name)?[..] else {
                return Err(Error::invalid(
                    "name",
                    "must have the form agencies/{a}/clients/{c}",
                ));
            };
            authorize(&caller, Action::Export.roles(), agency, Target::Named)?;
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let record = load_client(&mut tx, &key, agency, id).await?;
            let needs = store::needs_of_client(&mut tx, &key, agency, id).await?;
            let history = history_of(&mut tx, agency, id).await?;
            audit::record(
                &mut tx,
                access(&caller, agency, "ExportClient", &req.name, ""),
            )
            .await?;
            let audits = audit::for_resource(&mut tx, agency, &req.name).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::ExportClientResponse {
                client: Some(client_to_proto(&record, &history)),
                needs: needs.iter().map(need_to_proto).collect(),
                consent_history: history
                    .iter()
                    .map(|c| pb::ConsentChange {
                        purpose: c.purpose,
                        granted: c.granted,
                        change_time: Some(times::timestamp(c.change_time)),
                        actor: c.actor.clone(),
                        source: c.source.clone(),
                    })
                    .collect(),
                audit_records: audits.iter().map(audit_to_proto).collect(),
                export_time: Some(times::timestamp(times::now_millis())),
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn grant_consent(&self, request: Request<pb::GrantConsentRequest>) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let consent = ConsentRequest {
            name: &req.name,
            purpose: req.purpose,
            source: &req.source,
            request_id: &req.request_id,
            fingerprint: idempotency::fingerprint(&req),
        };
        Ok(Response::new(
            self.consent(&caller, &consent, true, "GrantConsent")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Reply<pb::Client> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let consent = ConsentRequest {
            name: &req.name,
            purpose: req.purpose,
            source: &req.source,
            request_id: &req.request_id,
            fingerprint: idempotency::fingerprint(&req),
        };
        Ok(Response::new(
            self.consent(&caller, &consent, false, "WithdrawConsent")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_need(&self, request: Request<pb::CreateNeedRequest>) -> Reply<pb::Need> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, client_id] =
                parse_name("parent", "agencies/{}/clients/{}", &req.parent)?[..]
            else {
                return Err(Error::invalid(
                    "parent",
                    "must have the form agencies/{a}/clients/{c}",
                ));
            };
            authorize(&caller, Action::Write.roles(), agency, Target::Named)?;
            let Some(need) = req.need.as_ref() else {
                return Err(Error::invalid("need", "required"));
            };
            let fields = NeedFields::parse(need, "need")?;
            let id = chosen_id("need_id", &req.need_id)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateNeed",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            lock_live_client(&mut change.tx, &change.key, agency, client_id).await?;
            let record = store::insert_need(
                &mut change.tx,
                &change.key,
                agency,
                client_id,
                &id,
                &fields,
                times::now_millis(),
            )
            .await?;
            let name = record.name();
            Ok(change.finish(&name, need_to_proto(&record)).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_need(&self, request: Request<pb::GetNeedRequest>) -> Reply<pb::Need> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, client_id, id] =
                parse_name("name", "agencies/{}/clients/{}/needs/{}", &req.name)?[..]
            else {
                return Err(Error::invalid(
                    "name",
                    "must have the form agencies/{a}/clients/{c}/needs/{n}",
                ));
            };
            authorize(&caller, Action::Read.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let record = store::get_need(&mut tx, &key, agency, client_id, id)
                .await?
                .ok_or(Error::NotFound("need"))?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "GetNeed", &req.name, ""),
                    &[&req.name],
                )
                .await?;
            Ok::<_, Error>(need_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_need(&self, request: Request<pb::UpdateNeedRequest>) -> Reply<pb::Need> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.need.as_ref() else {
                return Err(Error::invalid("need", "required"));
            };
            let [agency, client_id, id] =
                parse_name("need.name", "agencies/{}/clients/{}/needs/{}", &patch.name)?[..]
            else {
                return Err(Error::invalid(
                    "need.name",
                    "must have the form agencies/{a}/clients/{c}/needs/{n}",
                ));
            };
            authorize(&caller, Action::Write.roles(), agency, Target::Named)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "UpdateNeed",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            lock_live_client(&mut change.tx, &change.key, agency, client_id).await?;
            let record = store::get_need(&mut change.tx, &change.key, agency, client_id, id)
                .await?
                .ok_or(Error::NotFound("need"))?;
            check_etag(&patch.etag, record.revision)?;
            let mask = req
                .update_mask
                .as_ref()
                .map(|m| m.paths.clone())
                .unwrap_or_default();
            let fields = record.fields.apply_mask(patch, &mask)?;
            let now = times::now_millis();
            if !store::update_need(&mut change.tx, &change.key, &record, &fields, now).await? {
                return Err(Error::StaleEtag);
            }
            let updated = NeedRecord {
                fields,
                update_time: now,
                revision: record.revision + 1,
                ..record
            };
            let name = updated.name();
            Ok(change.finish(&name, need_to_proto(&updated)).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_needs(
        &self,
        request: Request<pb::ListNeedsRequest>,
    ) -> Reply<pb::ListNeedsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let ids = names::parse("agencies/{}/clients/{}", &req.parent, true)
                .map_err(|e| Error::invalid("parent", e.0))?;
            let (agency, client) = (ids[0], ids[1]);
            if agency == "-" {
                return Err(Error::invalid("parent", "the agency cannot be a wildcard"));
            }
            authorize(
                &caller,
                Action::Read.roles(),
                agency,
                if client != "-" {
                    Target::Named
                } else {
                    Target::Collection
                },
            )?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::NEED_SCHEMA, &req.parent, &params, 3)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let client_id = (client != "-").then_some(client);
            let (records, next_page_token) =
                store::list_needs(&mut tx, &key, agency, client_id, "", &query).await?;
            let names: Vec<String> = records.iter().map(NeedRecord::name).collect();
            tx.commit().await?;
            self.db
                .audit_reads(access(&caller, agency, "ListNeeds", "", ""), &names)
                .await?;
            Ok::<_, Error>(pb::ListNeedsResponse {
                needs: records.iter().map(need_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_need(&self, request: Request<pb::DeleteNeedRequest>) -> Reply<()> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let [agency, client_id, id] =
                parse_name("name", "agencies/{}/clients/{}/needs/{}", &req.name)?[..]
            else {
                return Err(Error::invalid(
                    "name",
                    "must have the form agencies/{a}/clients/{c}/needs/{n}",
                ));
            };
            authorize(&caller, Action::Write.roles(), agency, Target::Named)?;
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let record = store::get_need(&mut tx, &key, agency, client_id, id)
                .await?
                .ok_or(Error::NotFound("need"))?;
            check_etag(&req.etag, record.revision)?;
            if !store::delete_need(&mut tx, &record).await? {
                return Err(Error::StaleEtag);
            }
            audit::record(
                &mut tx,
                access(&caller, agency, "DeleteNeed", &req.name, ""),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_needs_due_for_review(
        &self,
        request: Request<pb::ListNeedsDueForReviewRequest>,
    ) -> Reply<pb::ListNeedsDueForReviewResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Collection)?;
            let day = match &req.review_on_or_before {
                Some(d) => times::date_key(d).ok_or_else(|| {
                    Error::invalid("review_on_or_before", "not a valid calendar date")
                })?,
                None => times::today_key(),
            };
            let date = times::date_from_key(day);
            let filter = format!(
                "status = OPEN AND next_review_date <= \"{:04}-{:02}-{:02}\"",
                date.year, date.month, date.day
            );
            let params = ListParams {
                filter: &filter,
                order_by: "next_review_date",
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::NEED_SCHEMA, &req.parent, &params, 3)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let (records, next_page_token) =
                store::list_needs(&mut tx, &key, agency, None, "", &query).await?;
            let names: Vec<String> = records.iter().map(NeedRecord::name).collect();
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "ListNeedsDueForReview", "", ""),
                    &names,
                )
                .await?;
            Ok::<_, Error>(pb::ListNeedsDueForReviewResponse {
                needs: records.iter().map(need_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Reply<pb::ListAuditRecordsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Audit.roles(), agency, Target::Collection)?;
            let params = ListParams {
                filter: &req.filter,
                order_by: "",
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&audit::AUDIT_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let (rows, next_page_token) = audit::list(&mut tx, agency, &query).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::ListAuditRecordsResponse {
                audit_records: rows.iter().map(audit_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = Action::Feed.roles();
        let page = outbox::list_for(
            &self.db,
            &caller,
            allowed,
            req.after_sequence,
            req.page_size,
        )
        .await
        .map_err(Error::from)?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events,
            remaining: page.remaining,
        }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = Action::Feed.roles();
        let stream = outbox::watch_for(self.db.clone(), &caller, allowed, req.after_sequence)
            .map_err(Error::from)?
            .map(|item| item.map_err(|e| Status::from(Error::Database(e))));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn audit_to_proto(a: &audit::AuditRow) -> pb::AuditRecord {
    pb::AuditRecord {
        name: format!("agencies/{}/auditRecords/{}", a.agency, a.id),
        actor: a.actor.clone(),
        action: a.action.clone(),
        resource: a.resource.clone(),
        time: Some(times::timestamp(a.time)),
        request_id: a.request_id.clone(),
    }
}
