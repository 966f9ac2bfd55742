//! The survey side of `--scenario scale`: the feedback, KPI and gateway
//! services of the hub, each on its own fresh PostgreSQL database beside
//! the complaints one, with survey responses stored in bulk and the reads
//! of a hub measured on them:
//!
//! - `QueryIndicator` (share satisfied, 2025 by month), each call for the
//!   next agency;
//! - `QueryIndicatorAcrossAgencies` for every agency of the hub at once (the
//!   hub's benchmark of its agencies);
//! - `GetDashboard` through the gateway (its KPI figures, the complaint
//!   counts and queue, follow-ups and comment topics), each call for the
//!   next agency.
//!
//! Responses are stored straight into the feedback tables (`responses`,
//! `response_scores`) with `COPY`, as the service's store writes them (the
//! same column encodings), and the KPI rollups are rebuilt from the same
//! responses: each response's deltas are what the feedback feed's
//! `ResponseSubmitted` adds (`touchstone_kpi::feeds::response_deltas`),
//! merged as the consumer merges them (`touchstone_kpi::store::merge`), and
//! copied into the rollup tables. The consumer's own rate is measured by
//! `--scenario kpi`. Before the reads are timed, each figure of a few
//! agencies is checked against a count of the raw responses by plain SQL.

use super::kpi::{mix, wire};
use super::load::{self, Measured, Op, Window};
use super::target::{self, FreshDb, Served};
use super::with_auth;
use anyhow::{Context, ensure};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use touchstone_api::common::v1::Date;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::gateway::v1 as gpb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1::Characteristics;
use touchstone_auth::{DevKey, Role, ServiceToken, TokenRequest};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::Settings;
use touchstone_platform::db::Db;

const UNITS: [&str; 4] = ["north", "south", "east", "west"];
/// The indicator every timed KPI read asks for.
const SATISFACTION: &str = "share_satisfied.a11_satisfaction";
/// The dashboard's period: the third quarter of the responses' year.
const PERIOD: &str = "2025-Q3";
/// Bytes of COPY data sent at a time.
const COPY_CHUNK: usize = 1 << 20;

/// One synthetic response: deterministic in (agency, number), so that the
/// feedback rows and the rollups rebuilt later agree.
struct Synthetic {
    day: time::Date,
    submit_ms: i64,
    unit: &'static str,
    channel: i32,
    segment: Option<Characteristics>,
    score: i32,
}

/// Response `k` of agency number `a`: a day of 2025 at random, its unit,
/// channel, score, and three in four with the client's characteristics.
fn synthetic(a: usize, k: u64) -> Synthetic {
    let r = mix(((a as u64) << 40) | k);
    let start =
        time::Date::from_calendar_date(2025, time::Month::January, 1).unwrap_or(time::Date::MIN);
    let day = start + time::Duration::days((r % 365) as i64);
    let midnight = day.midnight().assume_utc().unix_timestamp() * 1000;
    // Agencies differ a little, as a benchmark would show.
    let score = 1 + ((r >> 30) % 5 + (a as u64 % 3)).min(4) as i32;
    Synthetic {
        day,
        submit_ms: midnight + ((r >> 9) % 86_400_000) as i64,
        unit: UNITS[((r >> 20) % 4) as usize],
        channel: 1 + ((r >> 22) % 3) as i32,
        segment: (!(r >> 24).is_multiple_of(4)).then(|| Characteristics {
            age_band: 1 + ((r >> 26) % 8) as i32,
            disability: 1 + ((r >> 29) % 2) as i32,
            ..Default::default()
        }),
        score,
    }
}

/// The responses' year, as the timed reads ask for it.
const YEAR: (Date, Date) = (
    Date {
        year: 2025,
        month: 1,
        day: 1,
    },
    Date {
        year: 2025,
        month: 12,
        day: 31,
    },
);

/// One agency's survey.
struct Survey {
    id: String,
    name: String,
    touchpoint: fpb::Touchpoint,
}

/// The survey side of the hub, served.
pub(super) struct Hub {
    feedback: FreshDb,
    kpi: FreshDb,
    gateway: FreshDb,
    servers: Vec<Served>,
    surveys: Vec<Survey>,
    agencies: Vec<String>,
    /// Responses stored per agency.
    stored: Vec<u64>,
    /// Per agency: officer, senior officer and agency admin (the dashboard's readers).
    dashboard_tokens: Vec<MetadataValue<Ascii>>,
    /// Per agency: analyst.
    analyst_tokens: Vec<MetadataValue<Ascii>>,
    /// Per agency: an intake system.
    intake_tokens: Vec<MetadataValue<Ascii>>,
    /// A hub admin over every agency.
    hub_token: MetadataValue<Ascii>,
    kpi_channel: Channel,
    gateway_channel: Channel,
    feedback_channel: Channel,
}

/// What one size step measured on the survey side.
pub(super) struct Figures {
    pub(super) responses: u64,
    pub(super) load_secs: f64,
    pub(super) rollup_cells: i64,
    pub(super) feedback_bytes: i64,
    pub(super) kpi_bytes: i64,
    /// `SubmitResponse` through the API, and what one costs PostgreSQL.
    pub(super) submit: Measured,
    pub(super) db_bytes_per_response: f64,
    pub(super) wal_bytes_per_response: f64,
    pub(super) query: Measured,
    pub(super) across: Measured,
    pub(super) dashboard: Measured,
    pub(super) checked: usize,
}

fn bearer(dev: &DevKey, request: TokenRequest) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(format!("Bearer {}", dev.mint(&request)?).parse()?)
}

fn token(
    dev: &DevKey,
    agency: Option<&str>,
    roles: &[Role],
) -> anyhow::Result<MetadataValue<Ascii>> {
    bearer(
        dev,
        TokenRequest {
            subject: "bench".into(),
            agency: agency.map(str::to_string),
            agencies: agency.is_none().then(|| vec!["*".into()]),
            roles: roles.to_vec(),
            ttl: Duration::from_secs(6 * 3600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        },
    )
}

impl Hub {
    /// Fresh databases for feedback, KPI and the gateway on the server at
    /// `url`, the three services served (the gateway's complaints peer is
    /// `complaints`), and one published A-11 survey per agency.
    pub(super) async fn start(
        url: &str,
        pool: u32,
        settings: &Settings,
        dev: &DevKey,
        complaints: std::net::SocketAddr,
        agencies: &[String],
    ) -> anyhow::Result<Hub> {
        let mut dbs = Vec::new();
        for sets in [
            touchstone_feedback::migration_sets().to_vec(),
            touchstone_kpi::migration_sets().to_vec(),
            touchstone_gateway::migration_sets().to_vec(),
        ] {
            match target::fresh_postgres_with(url, pool, &target::service_schema(sets)).await {
                Ok(db) => dbs.push(db),
                Err(e) => {
                    for db in dbs {
                        db.cleanup().await;
                    }
                    return Err(e);
                }
            }
        }
        let gateway = dbs.pop().context("three databases")?;
        let kpi = dbs.pop().context("three databases")?;
        let feedback = dbs.pop().context("three databases")?;
        let mut hub = Hub {
            feedback,
            kpi,
            gateway,
            servers: Vec::new(),
            surveys: Vec::new(),
            agencies: agencies.to_vec(),
            stored: vec![0; agencies.len()],
            dashboard_tokens: Vec::new(),
            analyst_tokens: Vec::new(),
            intake_tokens: Vec::new(),
            hub_token: token(dev, None, &[Role::HubAdmin])?,
            kpi_channel: Channel::from_static("http://127.0.0.1:9").connect_lazy(),
            gateway_channel: Channel::from_static("http://127.0.0.1:9").connect_lazy(),
            feedback_channel: Channel::from_static("http://127.0.0.1:9").connect_lazy(),
        };
        if let Err(e) = hub.serve(settings, dev, complaints).await {
            hub.stop().await;
            return Err(e);
        }
        Ok(hub)
    }

    async fn serve(
        &mut self,
        settings: &Settings,
        dev: &DevKey,
        complaints: std::net::SocketAddr,
    ) -> anyhow::Result<()> {
        let verifier = target::verifier(dev)?;
        let limit = settings.max_concurrent_per_connection;
        let feedback = Served::feedback(self.feedback.db.clone(), verifier.clone(), limit).await?;
        // The KPI's feed consumers are not run: its rollups are loaded here.
        let kpi = Served::kpi(self.kpi.db.clone(), verifier.clone(), limit).await?;
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        let mut peers = touchstone_gateway::Peers::connect(
            target::NOWHERE,
            &url(complaints),
            &url(feedback.addr),
            &url(kpi.addr),
            ServiceToken::None,
            settings.hub.min_count,
        )?;
        // Each dashboard computed: this run measures how computing one
        // grows with the data, not the gateway's cache of a moment.
        peers.dashboard_cache = Duration::ZERO;
        let (routes, _) = touchstone_gateway::start(
            self.gateway.db.clone(),
            MasterKey::generate(),
            verifier,
            peers,
            None,
        );
        let gateway = Served::start(
            "gateway",
            touchstone_gateway::SERVICE_NAME,
            routes,
            self.gateway.db.clone(),
            limit,
        )
        .await?;
        self.kpi_channel = Channel::from_shared(url(kpi.addr))?.connect().await?;
        self.gateway_channel = Channel::from_shared(url(gateway.addr))?.connect().await?;
        self.feedback_channel = Channel::from_shared(url(feedback.addr))?.connect().await?;
        self.servers = vec![feedback, kpi, gateway];

        let mut client = FeedbackServiceClient::new(self.feedback_channel.clone());
        for agency in &self.agencies {
            let admin = token(dev, Some(agency), &[Role::AgencyAdmin])?;
            // One question, the A-11 satisfaction item: a short survey at a
            // touchpoint, as the bulk responses answer it.
            let survey = client
                .create_survey(with_auth(
                    fpb::CreateSurveyRequest {
                        parent: format!("agencies/{agency}"),
                        survey: Some(fpb::Survey {
                            title: "How did we do?".into(),
                            touchpoint: Some(fpb::Touchpoint {
                                service: "passports".into(),
                                ..Default::default()
                            }),
                            questions: vec![fpb::Question {
                                key: "satisfaction".into(),
                                text: "I am satisfied with the service I received.".into(),
                                kind: fpb::QuestionKind::Agreement5 as i32,
                                required: true,
                                standard_item: fpb::StandardItem::A11Satisfaction as i32,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    &admin,
                ))
                .await?
                .into_inner();
            client
                .publish_survey(with_auth(
                    fpb::PublishSurveyRequest {
                        name: survey.name.clone(),
                        ..Default::default()
                    },
                    &admin,
                ))
                .await?;
            let id = survey
                .name
                .rsplit('/')
                .next()
                .context("a survey name")?
                .to_string();
            self.surveys.push(Survey {
                id,
                name: survey.name,
                touchpoint: survey.touchpoint.unwrap_or_default(),
            });
            self.dashboard_tokens.push(token(
                dev,
                Some(agency),
                &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
            )?);
            self.analyst_tokens
                .push(token(dev, Some(agency), &[Role::Analyst])?);
            self.intake_tokens
                .push(token(dev, Some(agency), &[Role::Intake])?);
        }
        Ok(())
    }

    /// Stores responses until the hub holds `total` (spread evenly over the
    /// agencies), rebuilds the KPI rollups from all of them, checks a few
    /// agencies' figures against the raw responses and times the reads.
    pub(super) async fn measure(
        &mut self,
        total: u64,
        window: Window,
        workers: usize,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<Figures> {
        let started = std::time::Instant::now();
        let n = self.agencies.len() as u64;
        for a in 0..self.agencies.len() {
            let want = total / n + u64::from((a as u64) < total % n);
            let have = self.stored[a];
            if want > have {
                bar.set_message(format!(
                    "storing survey responses: agency {} of {n}, {} to {want}",
                    a + 1,
                    have
                ));
                self.copy_responses(a, have, want).await?;
                self.stored[a] = want;
            }
        }
        bar.set_message("rebuilding the KPI rollups from the responses");
        let cells = self.rebuild_rollups().await?;
        let owner = |f: &FreshDb| f.admin().cloned().context("PostgreSQL has an owner");
        let (fb, kp) = (owner(&self.feedback)?, owner(&self.kpi)?);
        for (db, tables) in [
            (&fb, &["responses", "response_scores"][..]),
            (
                &kp,
                &[
                    "kpi_cells",
                    "kpi_unit_days",
                    "kpi_unit_months",
                    "kpi_day_totals",
                ][..],
            ),
        ] {
            for t in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {t}")))
                    .execute(db.pool())
                    .await
                    .with_context(|| format!("VACUUM ANALYZE {t}"))?;
            }
        }
        // The loaded pages written out before anything is timed.
        for db in [&fb, &kp] {
            sqlx::query("CHECKPOINT")
                .execute(db.pool())
                .await
                .context("CHECKPOINT")?;
        }
        let load_secs = started.elapsed().as_secs_f64();
        let checked = self.check(&fb).await?;
        let size = |db: Db| async move {
            sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
                .fetch_one(db.pool())
                .await
        };
        let feedback_bytes = size(fb.clone()).await?;
        let kpi_bytes = size(kp.clone()).await?;

        bar.set_message(format!("SubmitResponse at {total} responses"));
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM responses")
                .fetch_one(fb.pool())
                .await
        };
        let responses_before = count().await?;
        let (db_before, wal_before) = super::scale::sizes_now(&fb).await?;
        let ops: Vec<_> = (0..workers.max(1))
            .map(|w| SubmitOp {
                client: FeedbackServiceClient::new(self.feedback_channel.clone()),
                surveys: self.surveys.iter().map(|s| s.name.clone()).collect(),
                tokens: self.intake_tokens.clone(),
                next: w,
                step: workers.max(1),
            })
            .collect();
        let submit = load::run("SubmitResponse", ops, window, bar).await;
        let (db_after, wal_after) = super::scale::sizes_now(&fb).await?;
        let taken = (count().await? - responses_before).max(1) as f64;

        bar.set_message(format!("QueryIndicator at {total} responses"));
        let query = load::run(
            "QueryIndicator",
            vec![QueryOp {
                client: KpiServiceClient::new(self.kpi_channel.clone()),
                agencies: self.agencies.clone(),
                tokens: self.analyst_tokens.clone(),
                next: 0,
            }],
            window,
            bar,
        )
        .await;
        bar.set_message(format!("QueryIndicatorAcrossAgencies at {total} responses"));
        let across = load::run(
            "QueryIndicatorAcrossAgencies",
            vec![AcrossOp {
                client: KpiServiceClient::new(self.kpi_channel.clone()),
                agencies: self.agencies.clone(),
                token: self.hub_token.clone(),
            }],
            window,
            bar,
        )
        .await;
        bar.set_message(format!("GetDashboard at {total} responses"));
        let dashboard = load::run(
            "GetDashboard",
            vec![DashboardOp {
                client: GatewayServiceClient::new(self.gateway_channel.clone()),
                agencies: self.agencies.clone(),
                tokens: self.dashboard_tokens.clone(),
                next: 0,
            }],
            window,
            bar,
        )
        .await;
        Ok(Figures {
            responses: self.stored.iter().sum(),
            load_secs,
            rollup_cells: cells,
            feedback_bytes,
            kpi_bytes,
            submit,
            db_bytes_per_response: (db_after - db_before).max(0) as f64 / taken,
            wal_bytes_per_response: (wal_after - wal_before).max(0) as f64 / taken,
            query,
            across,
            dashboard,
            checked,
        })
    }

    /// Copies agency `a`'s responses `from..to` into `responses` and
    /// `response_scores` (as the owner: one stream per table).
    async fn copy_responses(&self, a: usize, from: u64, to: u64) -> anyhow::Result<()> {
        let agency = &self.agencies[a];
        let survey = &self.surveys[a];
        let mut conn = self.feedback.owner_connection().await?;
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        let answers: Vec<String> = (1..=5)
            .map(|score| {
                serde_json::to_string(&[touchstone_feedback::domain::StoredAnswer {
                    key: "satisfaction".into(),
                    item: fpb::StandardItem::A11Satisfaction as i32,
                    score: Some(score),
                    yes: None,
                    choices: Vec::new(),
                    masked: String::new(),
                    sentiment: None,
                    topics: Vec::new(),
                }])
            })
            .collect::<Result<_, _>>()?;
        let item = fpb::StandardItem::A11Satisfaction as i32;
        let mut responses = String::with_capacity(COPY_CHUNK + 4096);
        let mut scores = String::with_capacity(COPY_CHUNK / 2 + 4096);
        {
            let mut copy = tx
                .copy_in_raw(
                    "COPY responses (agency, id, survey_id, channel, unit, submit_time, \
                     transaction_id, import_key, client_id, contact_agreed, characteristics, \
                     answers, originals, sentiment, anonymous, follow_up_id, erased, create_time) \
                     FROM STDIN",
                )
                .await?;
            for k in from..to {
                let s = synthetic(a, k);
                let id = response_id(a, k);
                let characteristics = s
                    .segment
                    .as_ref()
                    .map(touchstone_feedback::store::characteristics_json);
                use std::fmt::Write as _;
                let _ = writeln!(
                    responses,
                    "{agency}\t{id}\t{}\t{}\t{}\t{}\t\\N\t\\N\t\\N\tf\t{}\t{}\t\\N\t\\N\t{}\t\\N\tf\t{}",
                    survey.id,
                    s.channel,
                    s.unit,
                    s.submit_ms,
                    characteristics.as_deref().unwrap_or("\\N"),
                    answers[(s.score - 1) as usize],
                    if s.segment.is_some() { "f" } else { "t" },
                    s.submit_ms
                );
                let _ = writeln!(
                    scores,
                    "{agency}\t{id}\t{}\t{item}\t{}\t{}",
                    survey.id, s.score, s.submit_ms
                );
                if responses.len() >= COPY_CHUNK {
                    copy.send(responses.as_bytes()).await?;
                    responses.clear();
                }
            }
            copy.send(responses.as_bytes()).await?;
            copy.finish().await?;
        }
        let mut copy = tx
            .copy_in_raw(
                "COPY response_scores (agency, response_id, survey_id, item, score, submit_time) \
                 FROM STDIN",
            )
            .await?;
        for chunk in scores.as_bytes().chunks(COPY_CHUNK) {
            copy.send(chunk).await?;
        }
        copy.finish().await?;
        tx.commit().await?;
        sqlx::Connection::close(conn).await?;
        Ok(())
    }

    /// Clears the KPI rollups and writes them again from every stored
    /// response; returns the fine cells written.
    async fn rebuild_rollups(&self) -> anyhow::Result<i64> {
        let mut conn = self.kpi.owner_connection().await?;
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        sqlx::query("TRUNCATE kpi_cells, kpi_unit_days, kpi_unit_months, kpi_day_totals")
            .execute(&mut *tx)
            .await?;
        let mut cells = 0i64;
        for (a, agency) in self.agencies.iter().enumerate() {
            let survey = &self.surveys[a];
            let mut deltas = Vec::with_capacity(self.stored[a] as usize * 2);
            for k in 0..self.stored[a] {
                let s = synthetic(a, k);
                let anonymous = s.segment.is_none();
                let event = fpb::ResponseSubmitted {
                    survey: survey.name.clone(),
                    response: String::new(),
                    touchpoint: Some(survey.touchpoint.clone()),
                    unit: s.unit.into(),
                    channel: s.channel,
                    day: Some(wire(s.day)),
                    scores: vec![fpb::ItemScore {
                        item: fpb::StandardItem::A11Satisfaction as i32,
                        score: s.score,
                    }],
                    segment: s.segment,
                    anonymous,
                    ..Default::default()
                };
                touchstone_kpi::feeds::response_deltas(event, &mut deltas)
                    .map_err(|e| anyhow::anyhow!("response deltas: {e}"))?;
            }
            let merged = touchstone_kpi::store::merge(&deltas);
            cells += merged.cells.len() as i64;
            use std::fmt::Write as _;
            let mut out = String::with_capacity(COPY_CHUNK + 4096);
            let mut copy = tx
                .copy_in_raw(
                    "COPY kpi_cells (agency, measure, day, service, unit, channel, segment, value, count) \
                     FROM STDIN",
                )
                .await?;
            for (c, count) in &merged.cells {
                let _ = writeln!(
                    out,
                    "{agency}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{count}",
                    c.measure,
                    c.day,
                    copy_text(&c.service),
                    copy_text(&c.unit),
                    c.channel,
                    copy_text(&c.segment),
                    c.value
                );
                if out.len() >= COPY_CHUNK {
                    copy.send(out.as_bytes()).await?;
                    out.clear();
                }
            }
            copy.send(out.as_bytes()).await?;
            copy.finish().await?;
            for (table, rows) in [
                ("kpi_unit_days", &merged.unit_days),
                ("kpi_unit_months", &merged.unit_months),
            ] {
                out.clear();
                for ((measure, day, service, unit, channel, value), count) in rows {
                    let _ = writeln!(
                        out,
                        "{agency}\t{measure}\t{day}\t{}\t{}\t{channel}\t{value}\t{count}",
                        copy_text(service),
                        copy_text(unit)
                    );
                }
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY {table} (agency, measure, day, service, unit, channel, value, count) FROM STDIN"
                    ))
                    .await?;
                copy.send(out.as_bytes()).await?;
                copy.finish().await?;
            }
            out.clear();
            for ((measure, day, value), count) in &merged.day_totals {
                let _ = writeln!(out, "{agency}\t{measure}\t{day}\t{value}\t{count}");
            }
            let mut copy = tx
                .copy_in_raw("COPY kpi_day_totals (agency, measure, day, value, count) FROM STDIN")
                .await?;
            copy.send(out.as_bytes()).await?;
            copy.finish().await?;
            // The version moves on (never back), so no table cached for an
            // earlier version is taken for this one.
            sqlx::query(
                "INSERT INTO kpi_versions (agency, version) VALUES ($1, 1) \
                 ON CONFLICT (agency) DO UPDATE SET version = kpi_versions.version + 1",
            )
            .bind(agency)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        sqlx::Connection::close(conn).await?;
        Ok(cells)
    }

    /// Checks share satisfied over the dashboard's quarter for the first,
    /// middle and last agency: the numerator and denominator `QueryIndicator`
    /// gives must equal a count of the raw response scores. Returns how many
    /// agencies were checked.
    async fn check(&self, feedback_owner: &Db) -> anyhow::Result<usize> {
        let mut client = KpiServiceClient::new(self.kpi_channel.clone());
        let n = self.agencies.len();
        let mut picks = vec![0, n / 2, n - 1];
        picks.dedup();
        let from = time::Date::from_calendar_date(2025, time::Month::July, 1)?;
        let to = time::Date::from_calendar_date(2025, time::Month::September, 30)?;
        let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
        for &a in &picks {
            let agency = &self.agencies[a];
            let (satisfied, all): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE score >= 4), COUNT(*) FROM response_scores \
                 WHERE agency = $1 AND item = $2 AND submit_time >= $3 AND submit_time < $4",
            )
            .bind(agency)
            .bind(fpb::StandardItem::A11Satisfaction as i32 as i64)
            .bind(ms(from))
            .bind(ms(to) + 86_400_000)
            .fetch_one(feedback_owner.pool())
            .await?;
            let answer = client
                .query_indicator(with_auth(
                    kpb::QueryIndicatorRequest {
                        agency: format!("agencies/{agency}"),
                        indicator: SATISFACTION.into(),
                        start_date: Some(wire(from)),
                        end_date: Some(wire(to)),
                        ..Default::default()
                    },
                    &self.analyst_tokens[a],
                ))
                .await?
                .into_inner();
            let value = answer
                .series
                .first()
                .and_then(|s| s.points.first())
                .and_then(|p| p.value.as_ref())
                .context("a value for the quarter")?;
            ensure!(
                !value.suppressed
                    && value.numerator == Some(satisfied)
                    && value.denominator == Some(all),
                "agency {agency}: QueryIndicator says {:?}/{:?} satisfied, the raw responses {satisfied}/{all}",
                value.numerator,
                value.denominator
            );
        }
        Ok(picks.len())
    }

    pub(super) async fn stop(self) {
        for s in self.servers {
            s.stop().await;
        }
        for db in [self.feedback, self.kpi, self.gateway] {
            db.cleanup().await;
        }
    }
}

/// A response id as the service makes them (a UUID), fixed by (agency, number).
fn response_id(a: usize, k: u64) -> uuid::Uuid {
    let seed = ((a as u64) << 40) | k;
    uuid::Builder::from_random_bytes({
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&mix(seed).to_le_bytes());
        b[8..].copy_from_slice(&mix(seed ^ 0x5555_5555_5555_5555).to_le_bytes());
        b
    })
    .into_uuid()
}

/// A text value in COPY's text format (backslash, tab and line ends escaped).
fn copy_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\t', '\n', '\r', '\\']) {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
            .into()
    } else {
        s.into()
    }
}

/// `SubmitResponse` to the next agency's survey: one satisfaction score,
/// anonymous, a fresh request id.
struct SubmitOp {
    client: FeedbackServiceClient<Channel>,
    surveys: Vec<String>,
    tokens: Vec<MetadataValue<Ascii>>,
    next: usize,
    step: usize,
}

impl Op for SubmitOp {
    async fn call(&mut self) -> Result<(), String> {
        let i = self.next % self.surveys.len();
        self.next = self.next.wrapping_add(self.step);
        self.client
            .submit_response(with_auth(
                fpb::SubmitResponseRequest {
                    parent: self.surveys[i].clone(),
                    response: Some(fpb::Response {
                        answers: vec![fpb::Answer {
                            question_key: "satisfaction".into(),
                            score: Some(1 + (self.next % 5) as i32),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                },
                &self.tokens[i],
            ))
            .await
            .map(drop)
            .map_err(|s| format!("{:?}", s.code()))
    }
}

/// `QueryIndicator` for the next agency: share satisfied, 2025 by month.
struct QueryOp {
    client: KpiServiceClient<Channel>,
    agencies: Vec<String>,
    tokens: Vec<MetadataValue<Ascii>>,
    next: usize,
}

impl Op for QueryOp {
    async fn call(&mut self) -> Result<(), String> {
        let i = self.next % self.agencies.len();
        self.next = self.next.wrapping_add(1);
        let answer = self
            .client
            .query_indicator(with_auth(
                kpb::QueryIndicatorRequest {
                    agency: format!("agencies/{}", self.agencies[i]),
                    indicator: SATISFACTION.into(),
                    start_date: Some(YEAR.0),
                    end_date: Some(YEAR.1),
                    granularity: kpb::Granularity::Month as i32,
                    ..Default::default()
                },
                &self.tokens[i],
            ))
            .await
            .map_err(|s| format!("{:?}", s.code()))?
            .into_inner();
        match answer.series.first() {
            Some(s) if s.points.len() == 12 => Ok(()),
            _ => Err("not twelve months".into()),
        }
    }
}

/// `QueryIndicatorAcrossAgencies` for every agency of the hub: share
/// satisfied over 2025.
struct AcrossOp {
    client: KpiServiceClient<Channel>,
    agencies: Vec<String>,
    token: MetadataValue<Ascii>,
}

impl Op for AcrossOp {
    async fn call(&mut self) -> Result<(), String> {
        let answer = self
            .client
            .query_indicator_across_agencies(with_auth(
                kpb::QueryIndicatorAcrossAgenciesRequest {
                    agencies: self.agencies.clone(),
                    indicator: SATISFACTION.into(),
                    start_date: Some(YEAR.0),
                    end_date: Some(YEAR.1),
                    scope: None,
                },
                &self.token,
            ))
            .await
            .map_err(|s| format!("{:?}", s.code()))?
            .into_inner();
        if answer.values.len() != self.agencies.len() {
            return Err("not every agency".into());
        }
        Ok(())
    }
}

/// `GetDashboard` for the next agency, the third quarter of 2025.
struct DashboardOp {
    client: GatewayServiceClient<Channel>,
    agencies: Vec<String>,
    tokens: Vec<MetadataValue<Ascii>>,
    next: usize,
}

impl Op for DashboardOp {
    async fn call(&mut self) -> Result<(), String> {
        let i = self.next % self.agencies.len();
        self.next = self.next.wrapping_add(1);
        let d = self
            .client
            .get_dashboard(with_auth(
                gpb::GetDashboardRequest {
                    agency: format!("agencies/{}", self.agencies[i]),
                    period: PERIOD.into(),
                },
                &self.tokens[i],
            ))
            .await
            .map_err(|s| format!("{:?}", s.code()))?
            .into_inner();
        if !d.unreachable.is_empty() {
            return Err(format!("unreachable: {}", d.unreachable.join(",")));
        }
        Ok(())
    }
}
