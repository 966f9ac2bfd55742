//! End-to-end test of the demo data: `touchstone up --demo` at 2% of the
//! full volume on a fresh data directory, checked through the services'
//! public APIs; then `touchstone demo` again, which must create nothing twice.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use touchstone_api::common::v1::Date;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::gateway::v1 as gpb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_e2e::{Proc, free_port, run_ok, touchstone, touchstone_bin, within};

/// No test may take longer than this, start-up included.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The agency checked in detail, and its volumes at `--scale 0.02`
/// (services/touchstone/src/demo/plan.rs: 1200 clients, 900 complaints and
/// 9000 responses at full scale).
const AGENCY: &str = "passports";
const CLIENTS: usize = 24;
const COMPLAINTS: usize = 18;
const RESPONSES: usize = 180;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("touchstone-demo-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// The services `touchstone up` runs, by their setting names.
const SERVICES: &[&str] = &["register", "complaints", "feedback", "kpi", "gateway"];

/// Every service and the web dashboard on a port of its own, so that tests
/// running side by side never meet.
struct Ports(Vec<(String, u16)>);

impl Ports {
    fn new() -> Ports {
        Ports(
            SERVICES
                .iter()
                .map(|s| (s.to_string(), free_port()))
                .collect(),
        )
    }

    fn apply(&self, cmd: &mut Command) {
        for (service, port) in &self.0 {
            let upper = service.to_ascii_uppercase();
            cmd.env(
                format!("TOUCHSTONE_{upper}__LISTEN"),
                format!("127.0.0.1:{port}"),
            )
            .env(
                format!("TOUCHSTONE_PEERS__{upper}"),
                format!("http://127.0.0.1:{port}"),
            );
            if service == "gateway" {
                cmd.env(
                    "TOUCHSTONE_HUB__HTTP_LISTEN",
                    format!("127.0.0.1:{}", free_port()),
                );
            }
        }
    }

    async fn channel(&self, service: &str) -> Channel {
        let port = self
            .0
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no port for {service}"));
        Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to the {service}: {e}"))
    }
}

async fn mint_token(data_dir: &Path, roles: &[&str]) -> String {
    let mut cmd = touchstone(data_dir);
    cmd.args(["token", "--agency", AGENCY]);
    for role in roles {
        cmd.args(["--role", role]);
    }
    run_ok(cmd).await.stdout.trim().to_string()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .expect("a token is header text");
    req.metadata_mut().insert("authorization", bearer);
    req.set_timeout(Duration::from_secs(30));
    req
}

/// What the demo left in the passports agency, read through the APIs.
#[derive(Debug, PartialEq)]
struct Seen {
    clients: usize,
    complaints: usize,
    surveys: usize,
    responses: usize,
}

async fn look(ports: &Ports, token: &str) -> (Seen, Vec<cpb::Complaint>, Vec<fpb::Response>) {
    let parent = format!("agencies/{AGENCY}");
    let clients = RegisterServiceClient::new(ports.channel("register").await)
        .list_clients(with_token(
            reg::ListClientsRequest {
                parent: parent.clone(),
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("ListClients")
        .into_inner()
        .clients;
    let complaints = ComplaintsServiceClient::new(ports.channel("complaints").await)
        .list_complaints(with_token(
            cpb::ListComplaintsRequest {
                parent: parent.clone(),
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("ListComplaints")
        .into_inner()
        .complaints;
    let mut feedback = FeedbackServiceClient::new(ports.channel("feedback").await);
    let surveys = feedback
        .list_surveys(with_token(
            fpb::ListSurveysRequest {
                parent: parent.clone(),
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("ListSurveys")
        .into_inner()
        .surveys;
    assert!(
        surveys
            .iter()
            .all(|s| s.state == fpb::SurveyState::Published as i32),
        "every demo survey is published: {surveys:?}"
    );
    let responses = feedback
        .list_responses(with_token(
            fpb::ListResponsesRequest {
                parent: format!("{parent}/surveys/-"),
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("ListResponses")
        .into_inner()
        .responses;
    (
        Seen {
            clients: clients.len(),
            complaints: complaints.len(),
            surveys: surveys.len(),
            responses: responses.len(),
        },
        complaints,
        responses,
    )
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    1970 + (secs / 31_556_952) as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_creates_a_hub_through_the_apis_and_a_rerun_adds_nothing() {
    touchstone_bin();
    within(TEST_TIMEOUT, "up --demo", async {
        let dir = tempdir();
        let ports = Ports::new();
        let mut cmd = touchstone(dir.path());
        cmd.args(["up", "--demo", "--scale", "0.02"]);
        // A hub that publishes every figure (k = 1), so that the small demo's
        // counts can be checked exactly: with the default k, disclosure
        // control withholds figures of fewer than 10 complaints.
        cmd.env("TOUCHSTONE_HUB__MIN_COUNT", "1");
        ports.apply(&mut cmd);
        let mut up = Proc::spawn(cmd);
        up.wait_for_stdout(Duration::from_secs(240), |out| {
            out.contains("Stop with Ctrl-C")
        })
        .await;
        let out = up.stdout();
        assert!(
            out.contains("Demo hub: 5 agencies (passports, tenancy, customs, licensing, veterans)"),
            "the demo summary is missing\n{}",
            up.output_report()
        );
        assert!(
            out.contains("The KPI service counted every complaint and response"),
            "the KPI service did not catch up\n{}",
            up.output_report()
        );
        let demo_at = out.find("Demo hub:").unwrap_or(usize::MAX);
        let banner_at = out.find("Touchstone is up.").unwrap_or(0);
        assert!(demo_at < banner_at, "the data is there before the banner");
        // One token, named as the text around it names it.
        let exports: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("export "))
            .collect();
        assert!(
            exports.len() == 1 && exports[0].trim_start().starts_with("export TOKEN=ey"),
            "the banner should show one token, as `export TOKEN=`: {exports:?}"
        );
        assert!(
            out.contains("Development token (agency \"passports\"; roles officer, senior_officer, analyst, agency_admin"),
            "{out}"
        );

        let token = mint_token(
            dir.path(),
            &["officer", "senior_officer", "agency_admin", "analyst"],
        )
        .await;
        let (seen, complaints, responses) = look(&ports, &token).await;
        assert_eq!(
            seen,
            Seen {
                clients: CLIENTS,
                complaints: COMPLAINTS,
                surveys: 4,
                responses: RESPONSES,
            }
        );

        // Believable lifecycles: a year of complaints, most of them finished,
        // each with a history that starts at its receipt.
        let finished = complaints
            .iter()
            .filter(|c| {
                [
                    cpb::Status::Resolved as i32,
                    cpb::Status::Closed as i32,
                    cpb::Status::Withdrawn as i32,
                ]
                .contains(&c.status)
            })
            .count();
        assert!(
            finished * 2 > complaints.len(),
            "{finished} of {}",
            complaints.len()
        );
        let oldest = complaints
            .iter()
            .filter_map(|c| c.receive_time.as_ref().map(|t| t.seconds))
            .min()
            .expect("receive times");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!(
            now - oldest > 60 * 86_400,
            "complaints span months of history"
        );
        // A worked complaint's history (the demo keeps a fresh one received
        // only, so not just any).
        let worked = complaints
            .iter()
            .find(|c| {
                c.status == cpb::Status::Closed as i32 || c.status == cpb::Status::Resolved as i32
            })
            .expect("a resolved or closed complaint");
        let history = ComplaintsServiceClient::new(ports.channel("complaints").await)
            .list_complaint_history(with_token(
                cpb::ListComplaintHistoryRequest {
                    parent: worked.name.clone(),
                },
                &token,
            ))
            .await
            .expect("ListComplaintHistory")
            .into_inner()
            .entries;
        assert_eq!(history.first().map(|e| e.action.as_str()), Some("RECEIVE"));
        assert!(history.len() > 1, "{history:?}");
        let issues = ComplaintsServiceClient::new(ports.channel("complaints").await)
            .list_issues(with_token(
                cpb::ListIssuesRequest {
                    parent: format!("agencies/{AGENCY}"),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("ListIssues")
            .into_inner()
            .issues;
        assert_eq!(issues.len(), 3, "the learning register: {issues:?}");
        assert!(issues.iter().all(|i| !i.complaints.is_empty()));

        // Responses carry their own past submit times and, some, comments.
        assert!(
            responses
                .iter()
                .filter_map(|r| r.submit_time.as_ref())
                .any(|t| now - t.seconds > 30 * 86_400)
        );
        assert!(
            responses
                .iter()
                .any(|r| r.answers.iter().any(|a| !a.text.is_empty()))
        );

        // The KPI service counted them, and the charter has its standards.
        let mut kpi = KpiServiceClient::new(ports.channel("kpi").await);
        let year = this_year();
        let received = kpi
            .query_indicator(with_token(
                kpb::QueryIndicatorRequest {
                    agency: format!("agencies/{AGENCY}"),
                    indicator: "complaints_received".into(),
                    start_date: Some(Date {
                        year: year - 2,
                        month: 1,
                        day: 1,
                    }),
                    end_date: Some(Date {
                        year: year + 1,
                        month: 12,
                        day: 31,
                    }),
                    // Figures are released on the grid of periods: one a year.
                    granularity: kpb::Granularity::Year as i32,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("QueryIndicator")
            .into_inner();
        let n: i64 = received
            .series
            .iter()
            .flat_map(|s| &s.points)
            .filter_map(|p| p.value.as_ref())
            .map(|v| v.n)
            .sum();
        assert_eq!(n, COMPLAINTS as i64);
        let charter = kpi
            .get_charter_report(with_token(
                kpb::GetCharterReportRequest {
                    agency: format!("agencies/{AGENCY}"),
                    period: kpb::Granularity::Year as i32,
                    date: Some(Date {
                        year,
                        month: 1,
                        day: 1,
                    }),
                },
                &token,
            ))
            .await
            .expect("GetCharterReport")
            .into_inner();
        assert_eq!(charter.lines.len(), 6, "{charter:?}");

        // The gateway's hub directory and the dashboard that joins it all.
        let mut gateway = GatewayServiceClient::new(ports.channel("gateway").await);
        let units = gateway
            .list_units(with_token(
                gpb::ListUnitsRequest {
                    parent: format!("agencies/{AGENCY}"),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("ListUnits")
            .into_inner()
            .units;
        assert_eq!(units.len(), 3, "{units:?}");
        let groups = gateway
            .list_peer_groups(with_token(gpb::ListPeerGroupsRequest::default(), &token))
            .await
            .expect("ListPeerGroups")
            .into_inner()
            .peer_groups;
        assert_eq!(groups.len(), 2, "{groups:?}");
        let dashboard = gateway
            .get_dashboard(with_token(
                gpb::GetDashboardRequest {
                    agency: format!("agencies/{AGENCY}"),
                    period: year.to_string(),
                },
                &token,
            ))
            .await
            .expect("GetDashboard")
            .into_inner();
        assert!(dashboard.unreachable.is_empty(), "{dashboard:?}");
        assert_eq!(dashboard.headlines.len(), 6, "{dashboard:?}");

        // Running the demo again against the same hub creates nothing twice.
        let mut again = touchstone(dir.path());
        again.args(["demo", "--scale", "0.02", "--wait-kpi", "0"]);
        ports.apply(&mut again);
        let done = run_ok(again).await;
        assert!(
            done.stdout.contains("already there"),
            "the re-run reports what it found\n{}",
            done.report
        );
        let (seen_again, _, _) = look(&ports, &token).await;
        assert_eq!(seen_again, seen);

        up.terminate();
        up.wait(Duration::from_secs(30)).await;
    })
    .await;
}
