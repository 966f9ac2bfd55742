//! What the demo creates, decided before any call is made: the hub's
//! agencies, and for each a year of clients, complaints with their
//! lifecycles, and survey responses with comments. Pure and deterministic:
//! the same seed, scale and anchor give the same plan, whatever order the
//! calls later complete in.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use touchstone_api::common::v1::Channel as Via;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::register::v1 as reg;

/// Milliseconds in a day.
pub(crate) const DAY: i64 = 24 * 3600 * 1000;

/// Days of activity before the anchor.
pub(crate) const HISTORY_DAYS: i64 = 365;

/// How an agency takes part in benchmarks (the gateway's consent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consent {
    None,
    Anonymous,
    Named,
}

/// One agency of the demo hub and the character of its service.
#[derive(Debug)]
pub(crate) struct AgencySpec {
    pub(crate) id: &'static str,
    pub(crate) display_name: &'static str,
    pub(crate) time_zone: &'static str,
    /// Standard-time offset from UTC in hours, to put activity in office hours.
    pub(crate) utc_offset: i64,
    pub(crate) consent: Consent,
    pub(crate) units: &'static [(&'static str, &'static str)],
    pub(crate) services: &'static [&'static str],
    /// Complaint categories of the agency's own taxonomy (the last goes to
    /// the senior queue).
    pub(crate) categories: &'static [&'static str],
    /// What the agency's clients come for, for comments.
    pub(crate) thing: &'static str,
    /// Public holidays of the year, as (month, day).
    pub(crate) holidays: &'static [(u8, u8)],
    /// Full-scale volumes.
    pub(crate) clients: usize,
    pub(crate) complaints: usize,
    pub(crate) responses: usize,
    /// Probability that a complaint is acknowledged within the standard.
    pub(crate) ack_on_time: f64,
    /// Probability that a response is given within the stage's standard.
    pub(crate) respond_on_time: f64,
    /// Service quality, 0 to 1: moves every survey score.
    pub(crate) quality: f64,
    /// Change of quality over the year (positive: improving).
    pub(crate) trend: f64,
    /// Extra quality lost by respondents in remote locations (an equity gap).
    pub(crate) remote_gap: f64,
}

/// The demo hub.
pub(crate) const AGENCIES: &[AgencySpec] = &[
    AgencySpec {
        id: "passports",
        display_name: "Passports Office",
        time_zone: "Australia/Sydney",
        utc_offset: 10,
        consent: Consent::Named,
        units: &[
            ("passports-sydney", "Sydney Passport Office"),
            ("passports-melbourne", "Melbourne Passport Office"),
            ("passports-contact", "Passports Contact Centre"),
        ],
        services: &["passport-renewal", "new-passport", "urgent-travel"],
        categories: &[
            "processing-delay",
            "fees",
            "staff-conduct",
            "documents-lost",
            "online-service",
            "privacy-breach",
        ],
        thing: "passport",
        holidays: &[
            (1, 1),
            (1, 26),
            (4, 25),
            (6, 8),
            (10, 5),
            (12, 25),
            (12, 26),
        ],
        clients: 1200,
        complaints: 900,
        responses: 9000,
        ack_on_time: 0.96,
        respond_on_time: 0.9,
        quality: 0.82,
        trend: 0.06,
        remote_gap: 0.22,
    },
    AgencySpec {
        id: "tenancy",
        display_name: "Tenancy Services",
        time_zone: "Pacific/Auckland",
        utc_offset: 12,
        consent: Consent::Anonymous,
        units: &[
            ("tenancy-auckland", "Auckland Tenancy Centre"),
            ("tenancy-wellington", "Wellington Tenancy Centre"),
            ("tenancy-bonds", "Bond Processing"),
        ],
        services: &["bond-lodgement", "bond-refund", "dispute-resolution"],
        categories: &[
            "bond-refund-delay",
            "tribunal-process",
            "staff-conduct",
            "information-wrong",
            "online-service",
            "privacy-breach",
        ],
        thing: "bond refund",
        holidays: &[
            (1, 1),
            (1, 2),
            (2, 6),
            (4, 25),
            (6, 1),
            (10, 26),
            (12, 25),
            (12, 26),
        ],
        clients: 900,
        complaints: 700,
        responses: 7000,
        ack_on_time: 0.88,
        respond_on_time: 0.76,
        quality: 0.7,
        trend: 0.0,
        remote_gap: 0.25,
    },
    AgencySpec {
        id: "customs",
        display_name: "Customs Service",
        time_zone: "Australia/Brisbane",
        utc_offset: 10,
        consent: Consent::Named,
        units: &[
            ("customs-airport", "Brisbane Airport Clearance"),
            ("customs-seaport", "Port of Brisbane"),
            ("customs-mail", "International Mail Centre"),
        ],
        services: &["traveller-clearance", "import-declaration", "duty-refund"],
        categories: &[
            "clearance-delay",
            "goods-seized",
            "staff-conduct",
            "duty-charged",
            "online-service",
            "privacy-breach",
        ],
        thing: "clearance",
        holidays: &[
            (1, 1),
            (1, 26),
            (4, 25),
            (5, 4),
            (8, 12),
            (12, 25),
            (12, 26),
        ],
        clients: 800,
        complaints: 800,
        responses: 6000,
        ack_on_time: 0.8,
        respond_on_time: 0.64,
        quality: 0.62,
        trend: -0.05,
        remote_gap: 0.1,
    },
    AgencySpec {
        id: "licensing",
        display_name: "Driver Licensing",
        time_zone: "Australia/Perth",
        utc_offset: 8,
        consent: Consent::Anonymous,
        units: &[
            ("licensing-perth", "Perth Licensing Centre"),
            ("licensing-regional", "Regional Licensing"),
            ("licensing-online", "Online Services"),
        ],
        services: &["licence-renewal", "driving-test", "vehicle-registration"],
        categories: &[
            "test-booking",
            "fees",
            "staff-conduct",
            "card-not-received",
            "online-service",
            "privacy-breach",
        ],
        thing: "licence",
        holidays: &[
            (1, 1),
            (1, 26),
            (3, 2),
            (4, 25),
            (6, 1),
            (9, 28),
            (12, 25),
            (12, 26),
        ],
        clients: 900,
        complaints: 600,
        responses: 7000,
        ack_on_time: 0.93,
        respond_on_time: 0.84,
        quality: 0.76,
        trend: 0.02,
        remote_gap: 0.28,
    },
    AgencySpec {
        id: "veterans",
        display_name: "Veterans' Support",
        time_zone: "Australia/Sydney",
        utc_offset: 10,
        consent: Consent::None,
        units: &[
            ("veterans-claims", "Claims Processing"),
            ("veterans-support", "Client Support"),
        ],
        services: &["compensation-claim", "health-card"],
        categories: &[
            "claim-delay",
            "decision-wrong",
            "staff-conduct",
            "payment-error",
            "online-service",
            "privacy-breach",
        ],
        thing: "claim",
        holidays: &[
            (1, 1),
            (1, 26),
            (4, 25),
            (6, 8),
            (10, 5),
            (12, 25),
            (12, 26),
        ],
        clients: 400,
        complaints: 250,
        responses: 2500,
        ack_on_time: 0.9,
        respond_on_time: 0.7,
        quality: 0.72,
        trend: 0.03,
        remote_gap: 0.15,
    },
];

/// How many of `full` to create at `scale`, never fewer than `floor`.
pub(crate) fn scaled(full: usize, scale: f64, floor: usize) -> usize {
    ((full as f64 * scale).round() as usize).max(floor)
}

/// A register client to create.
#[derive(Debug, Clone)]
pub(crate) struct PlannedClient {
    /// The client id (resource name `agencies/{a}/clients/{id}`).
    pub(crate) id: String,
    pub(crate) client: reg::Client,
    /// Consents to grant: feedback surveys, statistics.
    pub(crate) consents: Vec<reg::ConsentPurpose>,
    /// Whether a response may be linked to the client.
    pub(crate) linkable: bool,
    pub(crate) remote: bool,
}

/// A historic complaint: how it came in and the steps it went through.
#[derive(Debug, Clone)]
pub(crate) struct PlannedComplaint {
    pub(crate) id: String,
    pub(crate) complaint: cpb::Complaint,
    pub(crate) steps: Vec<cpb::HistoricStep>,
}

/// The survey templates, in the order CreateTemplateSurveys returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    A11,
    Csat,
    Nps,
    Ces,
}

impl Form {
    pub(crate) const ALL: [Form; 4] = [Form::A11, Form::Csat, Form::Nps, Form::Ces];

    pub(crate) fn index(self) -> usize {
        match self {
            Form::A11 => 0,
            Form::Csat => 1,
            Form::Nps => 2,
            Form::Ces => 3,
        }
    }
}

/// One answer: a question key and a score or a comment.
#[derive(Debug, Clone)]
pub(crate) enum PlannedAnswer {
    Score(&'static str, i32),
    Comment(String),
}

/// A survey response to import.
#[derive(Debug, Clone)]
pub(crate) struct PlannedResponse {
    pub(crate) row_id: String,
    pub(crate) form: Form,
    pub(crate) submit_ms: i64,
    pub(crate) channel: Via,
    pub(crate) unit: &'static str,
    /// A client id of the agency (linked with consent), or none.
    pub(crate) client: Option<String>,
    pub(crate) contact_agreed: bool,
    pub(crate) answers: Vec<PlannedAnswer>,
}

/// Everything one agency gets.
#[derive(Debug)]
pub(crate) struct AgencyPlan {
    pub(crate) spec: &'static AgencySpec,
    pub(crate) clients: Vec<PlannedClient>,
    pub(crate) complaints: Vec<PlannedComplaint>,
    pub(crate) responses: Vec<PlannedResponse>,
}

/// The plan of every agency. `anchor_ms` is the end of the year of
/// activity (the start of the current UTC day).
pub(crate) fn plan(seed: u64, scale: f64, anchor_ms: i64) -> Vec<AgencyPlan> {
    AGENCIES
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            // One generator per agency and kind, so each part is the same
            // whatever the scale of the others.
            let rng =
                |part: u64| StdRng::seed_from_u64(seed ^ ((i as u64 + 1) << 32) ^ (part << 48));
            let clients = plan_clients(spec, &mut rng(1), scaled(spec.clients, scale, 20));
            let complaints = plan_complaints(
                spec,
                &mut rng(2),
                scaled(spec.complaints, scale, 12),
                &clients,
                anchor_ms,
            );
            let responses = plan_responses(
                spec,
                &mut rng(3),
                scaled(spec.responses, scale, 60),
                &clients,
                anchor_ms,
            );
            AgencyPlan {
                spec,
                clients,
                complaints,
                responses,
            }
        })
        .collect()
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// Picks an index by weight.
fn weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.r#gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

const GIVEN: &[&str] = &[
    "Olivia",
    "Jack",
    "Aroha",
    "Wei",
    "Priya",
    "Liam",
    "Mei",
    "Tane",
    "Sofia",
    "Noah",
    "Fatima",
    "Lachlan",
    "Ngaio",
    "Minh",
    "Isla",
    "Mohammed",
    "Charlotte",
    "Rangi",
    "Anh",
    "Grace",
    "Ethan",
    "Leilani",
    "Hamish",
    "Amara",
    "Jun",
    "Ruby",
    "Kiri",
    "Oscar",
    "Zara",
    "Tomasi",
    "Emily",
    "Arjun",
    "Hannah",
    "Sione",
    "Chloe",
    "Dmitri",
    "Maia",
    "Patrick",
    "Yasmin",
    "Ben",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Nguyen",
    "Williams",
    "Te Rangi",
    "Chen",
    "Patel",
    "Brown",
    "Kaur",
    "Wilson",
    "Singh",
    "Taylor",
    "Walker",
    "Ngata",
    "Li",
    "Anderson",
    "Tuilagi",
    "Martin",
    "Kim",
    "Thompson",
    "Ali",
    "White",
    "Parata",
    "Wang",
    "Harris",
    "O'Brien",
    "Tran",
    "Jackson",
    "Henare",
    "Murphy",
    "Lee",
    "King",
    "Fonoti",
    "Clarke",
    "Ahmed",
    "Young",
    "Mitchell",
    "Papadopoulos",
    "Scott",
];
const ORGANISATIONS: &[&str] = &[
    "Harbour Freight Ltd",
    "Southern Cross Imports",
    "Kauri Property Management",
    "Bayside Rentals",
    "Pacific Logistics",
    "Outback Haulage Co",
    "Coral Coast Traders",
    "Northside Community Housing",
];
const LANGUAGES: &[&str] = &[
    "en", "en", "en", "en", "en", "zh-Hans", "vi", "ar", "hi", "mi", "sm",
];
const LOCALITIES: &[&str] = &[
    "Parramatta",
    "Fitzroy",
    "Newtown",
    "Ponsonby",
    "Petone",
    "Toowong",
    "Fremantle",
    "Broome",
    "Dubbo",
    "Alice Springs",
    "Kalgoorlie",
    "Rotorua",
    "Ballarat",
    "Cairns",
];

fn plan_clients(spec: &AgencySpec, rng: &mut StdRng, n: usize) -> Vec<PlannedClient> {
    use reg::{AgeBand as A, Answer as Y, Gender as G};
    (0..n)
        .map(|i| {
            let id = format!("demo-{:05}", i + 1);
            let organisation = spec.id == "customs" && rng.gen_bool(0.15)
                || spec.id == "tenancy" && rng.gen_bool(0.08);
            let remote = rng.gen_bool(0.25);
            let yes_no = |rng: &mut StdRng, p: f64| match weighted(rng, &[p, 1.0 - p - 0.06, 0.06])
            {
                0 => Y::Yes,
                1 => Y::No,
                _ => Y::PreferNotToSay,
            };
            let age_band = [
                A::Under18,
                A::AgeBand1824,
                A::AgeBand2534,
                A::AgeBand3544,
                A::AgeBand4554,
                A::AgeBand5564,
                A::AgeBand6574,
                A::AgeBand75Plus,
                A::PreferNotToSay,
            ][weighted(rng, &[1.0, 9.0, 17.0, 17.0, 16.0, 15.0, 13.0, 8.0, 4.0])];
            let gender = [G::Woman, G::Man, G::NonBinary, G::PreferNotToSay]
                [weighted(rng, &[49.0, 47.0, 1.5, 2.5])];
            let characteristics = reg::Characteristics {
                age_band: age_band as i32,
                gender: gender as i32,
                disability: yes_no(rng, 0.17) as i32,
                first_nations: yes_no(rng, 0.06) as i32,
                culturally_linguistically_diverse: yes_no(rng, 0.25) as i32,
                remote_location: if remote { Y::Yes } else { Y::No } as i32,
            };
            let language = *pick(rng, LANGUAGES);
            let mut needs = Vec::new();
            if characteristics.disability == Y::Yes as i32 {
                use reg::AccessibilityNeed as N;
                needs.push(*pick(
                    rng,
                    &[
                        N::WheelchairAccess,
                        N::LargePrint,
                        N::ScreenReader,
                        N::HearingLoop,
                        N::EasyRead,
                    ],
                ) as i32);
            }
            let channel = [Via::Email, Via::Phone, Via::Web, Via::Letter, Via::Sms]
                [weighted(rng, &[45.0, 25.0, 15.0, 5.0, 10.0])];
            let mut client = reg::Client {
                preferred_channel: channel as i32,
                preferred_language: language.into(),
                interpreter_needed: language != "en" && rng.gen_bool(0.3),
                accessibility_needs: needs,
                external_references: vec![reg::ExternalReference {
                    system: format!("{}-cms", spec.id),
                    id: format!(
                        "{}{:07}",
                        spec.id[..2].to_ascii_uppercase(),
                        100_000 + i * 7
                    ),
                }],
                postal_address: Some(reg::PostalAddress {
                    address_lines: vec![format!("{} {} Street", 1 + i % 180, pick(rng, FAMILY))],
                    locality: (*pick(rng, LOCALITIES)).into(),
                    region_code: if spec.time_zone == "Pacific/Auckland" {
                        "NZ"
                    } else {
                        "AU"
                    }
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if organisation {
                let name = *pick(rng, ORGANISATIONS);
                client.kind = reg::ClientKind::Organisation as i32;
                client.organisation_name = format!("{name} ({})", i + 1);
                client.email = format!("accounts{}@{}.example", i + 1, slug(name));
                client.phone = format!("+61 7 3{:03} {:04}", i % 1000, (i * 37) % 10_000);
            } else {
                let given = *pick(rng, GIVEN);
                let family = *pick(rng, FAMILY);
                client.kind = reg::ClientKind::Person as i32;
                client.given_names = given.into();
                client.family_name = family.into();
                client.email = format!("{}.{}{}@example.org", slug(given), slug(family), i + 1);
                client.phone = format!(
                    "+61 4{:02} {:03} {:03}",
                    i % 100,
                    (i * 13) % 1000,
                    (i * 7) % 1000
                );
                client.characteristics = Some(characteristics);
            }
            let mut consents = Vec::new();
            if !organisation && rng.gen_bool(0.55) {
                consents.push(reg::ConsentPurpose::FeedbackSurveys);
                if rng.gen_bool(0.8) {
                    consents.push(reg::ConsentPurpose::Statistics);
                }
            }
            PlannedClient {
                linkable: consents.contains(&reg::ConsentPurpose::FeedbackSurveys),
                id,
                client,
                consents,
                remote,
            }
        })
        .collect()
}

fn slug(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A time in the last year, more often on weekdays and in office hours
/// (agency time), more often recently (demand grows over the year).
fn past_time(rng: &mut StdRng, spec: &AgencySpec, anchor_ms: i64, weekdays: bool) -> i64 {
    loop {
        // Density rising by half over the year.
        let u: f64 = rng.r#gen();
        let back = HISTORY_DAYS as f64 * (1.0 - (1.0 - u).powf(1.3));
        let day_start = anchor_ms - ((back as i64) + 1) * DAY;
        let local_day = (day_start + spec.utc_offset * 3600 * 1000).div_euclid(DAY);
        // 1970-01-01 was a Thursday: ISO weekday 4.
        let weekday = (local_day + 3).rem_euclid(7) + 1;
        if weekdays && weekday >= 6 && rng.gen_bool(0.85) {
            continue;
        }
        let minute = if rng.gen_bool(0.8) {
            rng.gen_range(8 * 60 + 30..17 * 60)
        } else {
            rng.gen_range(0..24 * 60)
        };
        let t = local_day * DAY + minute * 60_000 + rng.gen_range(0..60_000)
            - spec.utc_offset * 3600 * 1000;
        if t < anchor_ms {
            return t;
        }
    }
}

fn days(rng: &mut StdRng, range: std::ops::RangeInclusive<i64>) -> i64 {
    rng.gen_range(range) * DAY + rng.gen_range(0..8 * 3600 * 1000)
}

pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

const NARRATIVES: &[&str] = &[
    "I applied for my {thing} weeks ago and have heard nothing despite calling twice.",
    "The officer at the counter was dismissive and would not explain the decision about my {thing}.",
    "I was charged twice for my {thing} and nobody will refund the second payment.",
    "The online form crashed three times and lost my documents for the {thing}.",
    "I was given the wrong information about my {thing} and had to start again.",
    "My {thing} was sent to an old address even though I updated it online.",
    "I waited on hold for over an hour and was then cut off.",
    "The letter about my {thing} was confusing and did not say what to do next.",
];
const REMEDIES_SOUGHT: &[&str] = &[
    "An apology and a decision within a week.",
    "A refund of the fee.",
    "Someone to call me back and explain.",
    "Fix the problem so it does not happen to others.",
    "My {thing} processed urgently.",
];
const ROOT_CAUSES: &[&str] = &[
    "process",
    "communication",
    "system-error",
    "staff-training",
    "policy",
    "capacity",
];
const SUMMARIES: &[&str] = &[
    "Apologised, explained the delay and expedited the {thing}.",
    "Explained how the decision was made and the review options.",
    "Refunded the duplicate payment and apologised.",
    "Corrected the record and confirmed the {thing} details with the client.",
    "Found no error; explained the requirements again in plain language.",
];

fn plan_complaints(
    spec: &'static AgencySpec,
    rng: &mut StdRng,
    n: usize,
    clients: &[PlannedClient],
    anchor_ms: i64,
) -> Vec<PlannedComplaint> {
    use cpb::historic_step::Action as A;
    use cpb::{Outcome as O, Remedy as R, Severity as S};
    let mut out: Vec<PlannedComplaint> = (0..n)
        .map(|i| {
            let receive = past_time(rng, spec, anchor_ms, true);
            let channel = [
                Via::Web,
                Via::Phone,
                Via::Email,
                Via::InPerson,
                Via::Letter,
                Via::Referral,
                Via::SocialMedia,
            ][weighted(rng, &[34.0, 24.0, 20.0, 10.0, 5.0, 4.0, 3.0])];
            let severity =
                [S::Low, S::Medium, S::High, S::Serious][weighted(rng, &[28.0, 47.0, 20.0, 5.0])];
            let category_index = weighted(rng, &[30.0, 16.0, 14.0, 14.0, 22.0, 2.0]);
            let category = spec.categories[category_index.min(spec.categories.len() - 1)];
            let (unit, _) = *pick(rng, spec.units);
            let service = *pick(rng, spec.services);
            let complainant = match weighted(rng, &[62.0, 8.0, 30.0]) {
                0 => cpb::complainant::Who::Client(format!(
                    "agencies/{}/clients/{}",
                    spec.id,
                    pick(rng, clients).id
                )),
                1 => cpb::complainant::Who::Anonymous(true),
                _ => {
                    let given = *pick(rng, GIVEN);
                    let family = *pick(rng, FAMILY);
                    cpb::complainant::Who::Contact(cpb::ContactDetails {
                        display_name: format!("{given} {family}"),
                        email: format!("{}.{}@example.net", slug(given), slug(family)),
                        phone: String::new(),
                    })
                }
            };
            let fill = |s: &str| s.replace("{thing}", spec.thing);
            let complaint = cpb::Complaint {
                complainant: Some(cpb::Complainant {
                    who: Some(complainant),
                }),
                channel: channel as i32,
                receive_time: Some(timestamp(receive)),
                unit: unit.into(),
                service: service.into(),
                category: category.into(),
                description: fill(pick::<&str>(rng, NARRATIVES)),
                remedy_sought: fill(pick::<&str>(rng, REMEDIES_SOUGHT)),
                severity: severity as i32,
                ..Default::default()
            };
            let officer = format!("{}-officer-{}", unit, rng.gen_range(1..=6));
            let mut steps: Vec<cpb::HistoricStep> = Vec::new();
            let step = |action: A, t: i64| cpb::HistoricStep {
                action: action as i32,
                time: Some(timestamp(t)),
                actor: officer.clone(),
                ..Default::default()
            };
            // Acknowledgement: within 2 working days, or late.
            let mut t = receive
                + if rng.gen_bool(spec.ack_on_time) {
                    rng.gen_range(600_000..DAY * 2)
                } else {
                    days(rng, 5..=9)
                };
            let mut assign = step(A::Assign, t);
            assign.assignment = Some(cpb::Assignment {
                unit: unit.into(),
                officer: officer.clone(),
            });
            steps.push(assign);
            steps.push(step(A::Acknowledge, t));
            if rng.gen_bool(0.04) {
                t += days(rng, 1..=10);
                let mut w = step(A::Withdraw, t);
                w.note = "The complainant withdrew the complaint.".into();
                steps.push(w);
                return PlannedComplaint {
                    id: format!("demo-{:05}", i + 1),
                    complaint,
                    steps,
                };
            }
            t += rng.gen_range(600_000..DAY);
            steps.push(step(A::Start, t));
            // The stage the complaint is resolved at, and the clock of its stage.
            let escalations = match weighted(rng, &[82.0, 13.0, 4.0, 1.0]) {
                0 => 0,
                1 => 1,
                2 => 2,
                _ => 3,
            };
            let mut stage_start = receive;
            let mut allowed_calendar_days = 6;
            for e in 0..escalations {
                t = stage_start.max(t) + days(rng, 2..=6);
                let mut s = step(A::Escalate, t);
                let next = [
                    cpb::Stage::Investigation,
                    cpb::Stage::InternalReview,
                    cpb::Stage::ExternalReview,
                ][e];
                s.stage = next as i32;
                if next == cpb::Stage::ExternalReview {
                    s.referral = Some(cpb::Referral {
                        body: "Ombudsman".into(),
                        reference: format!("OMB-{}-{:04}", spec.id.to_ascii_uppercase(), i + 1),
                        referral_time: None,
                    });
                }
                s.note = "Escalated for a fuller review.".into();
                steps.push(s);
                stage_start = t;
                allowed_calendar_days = [26, 26, 40][e];
            }
            // Waiting for the client stops the clock.
            let mut paused = 0;
            if rng.gen_bool(0.15) {
                let at = t + days(rng, 0..=2);
                paused = days(rng, 2..=12);
                let mut a = step(A::AwaitClient, at);
                a.note = "Asked the client for supporting documents.".into();
                steps.push(a);
                steps.push(step(A::Resume, at + paused));
                t = at + paused;
            }
            let due = stage_start + paused;
            let resolve = if rng.gen_bool(spec.respond_on_time) {
                due + days(rng, 1..=allowed_calendar_days - 1)
            } else {
                due + days(rng, allowed_calendar_days + 3..=allowed_calendar_days * 3)
            }
            .max(t + 3_600_000);
            let outcome = [
                O::Upheld,
                O::PartlyUpheld,
                O::NotUpheld,
                O::ResolvedEarly,
                O::OutOfJurisdiction,
            ][weighted(rng, &[24.0, 20.0, 34.0, 17.0, 5.0])];
            let remedies = match outcome {
                O::Upheld | O::PartlyUpheld => {
                    let mut r = vec![R::Apology as i32];
                    r.push(*pick(
                        rng,
                        &[
                            R::DecisionChanged as i32,
                            R::Explanation as i32,
                            R::ServiceImprovement as i32,
                            R::Financial as i32,
                        ],
                    ));
                    r
                }
                O::ResolvedEarly => vec![R::Explanation as i32],
                _ => vec![R::Explanation as i32],
            };
            let financial = remedies.contains(&(R::Financial as i32));
            let resolution = cpb::Resolution {
                outcome: outcome as i32,
                remedies,
                root_causes: vec![(*pick(rng, ROOT_CAUSES)).into()],
                financial_amount_cents: if financial {
                    rng.gen_range(20..500) * 100
                } else {
                    0
                },
                summary: fill(pick::<&str>(rng, SUMMARIES)),
                financial_approver: String::new(),
            };
            let mut r = step(A::Resolve, resolve);
            r.resolution = Some(resolution.clone());
            steps.push(r);
            t = resolve;
            if rng.gen_bool(0.88) {
                t += days(rng, 1..=6);
                steps.push(step(A::Close, t));
                if rng.gen_bool(0.04) {
                    t += days(rng, 3..=20);
                    let mut re = step(A::Reopen, t);
                    re.note = "The client provided new information.".into();
                    steps.push(re);
                    t += days(rng, 0..=2);
                    steps.push(step(A::Start, t));
                    t += days(rng, 2..=8);
                    let mut r = step(A::Resolve, t);
                    r.resolution = Some(resolution);
                    steps.push(r);
                    t += days(rng, 1..=5);
                    steps.push(step(A::Close, t));
                }
            }
            PlannedComplaint {
                id: format!("demo-{:05}", i + 1),
                complaint,
                steps,
            }
        })
        .collect();
    // Steps after the anchor have not happened yet: recent complaints stay
    // open. Some recent ones are stuck (not yet acknowledged, or in progress
    // with no response), more so in a late agency: the overdue queue.
    for c in &mut out {
        let received = c
            .complaint
            .receive_time
            .as_ref()
            .map_or(0, |t| t.seconds * 1000);
        let age = anchor_ms - received;
        if age < 6 * DAY && rng.gen_bool((1.0 - spec.ack_on_time) * 3.0) {
            c.steps.clear();
        } else if age < 45 * DAY
            && rng.gen_bool(((1.0 - spec.respond_on_time) * 1.5).min(1.0))
            && let Some(start) = c.steps.iter().position(|s| s.action == A::Start as i32)
        {
            c.steps.truncate(start + 1);
        }
        let keep = c
            .steps
            .iter()
            .take_while(|s| {
                s.time
                    .as_ref()
                    .is_some_and(|t| t.seconds * 1000 < anchor_ms)
            })
            .count();
        c.steps.truncate(keep);
    }
    // Whatever the day, the queue has a fresh complaint to work on: the one
    // received last stays as received (the browser test walks it).
    if !out.iter().any(|c| c.steps.is_empty())
        && let Some(last) = out
            .iter_mut()
            .max_by_key(|c| c.complaint.receive_time.as_ref().map_or(0, |t| t.seconds))
    {
        last.steps.clear();
    }
    out
}

const PRAISE: &[&str] = &[
    "The staff member was friendly and patient with me.",
    "Quick and easy online, my {thing} arrived promptly.",
    "Everything was explained clearly and I was kept informed.",
    "Really helpful officer who sorted out my {thing} the same day.",
    "The website was simple to use and the outcome was fast.",
    "Great service, thank you.",
];
const NEUTRAL: &[&str] = &[
    "It was fine overall.",
    "The process was okay but the form could be clearer.",
    "Took a while but got there in the end.",
    "Nothing special, it did the job.",
];
const CRITICISM: &[&str] = &[
    "I waited on hold for over an hour before anyone answered.",
    "The website kept crashing when I tried to upload documents.",
    "Nobody called back and the staff were rude when I asked about my {thing}.",
    "The decision on my {thing} was confusing and no one explained it.",
    "It took months to get my {thing}, far too slow.",
    "The counter had no ramp and the lift was broken, not accessible at all.",
    "Terrible experience, the queue was out the door.",
    "I was told three different things by three different staff.",
];

fn clamp(x: f64, lo: i32, hi: i32) -> i32 {
    (x.round() as i32).clamp(lo, hi)
}

fn plan_responses(
    spec: &'static AgencySpec,
    rng: &mut StdRng,
    n: usize,
    clients: &[PlannedClient],
    anchor_ms: i64,
) -> Vec<PlannedResponse> {
    let linkable: Vec<&PlannedClient> = clients.iter().filter(|c| c.linkable).collect();
    (0..n)
        .map(|i| {
            let submit_ms = past_time(rng, spec, anchor_ms, false);
            let form = Form::ALL[weighted(rng, &[40.0, 25.0, 20.0, 15.0])];
            let channel = [Via::Web, Via::Phone, Via::InPerson, Via::App, Via::Email]
                [weighted(rng, &[50.0, 20.0, 18.0, 7.0, 5.0])];
            let (unit, _) = *pick(rng, spec.units);
            let client =
                (!linkable.is_empty() && rng.gen_bool(0.35)).then(|| *pick(rng, &linkable));
            // Quality: the agency's, its trend over the year, the channel,
            // and an equity gap for remote respondents; then noise.
            let age = 1.0 - (anchor_ms - submit_ms) as f64 / (HISTORY_DAYS * DAY) as f64;
            let mut q = spec.quality + spec.trend * (age - 0.5);
            if channel == Via::Phone {
                q -= 0.06;
            }
            if client.is_some_and(|c| c.remote) {
                q -= spec.remote_gap;
            }
            let noise: f64 = (0..3).map(|_| rng.r#gen::<f64>() - 0.5).sum::<f64>() * 0.45;
            let latent = (q + noise).clamp(0.0, 1.0);
            let five =
                |rng: &mut StdRng| clamp(1.0 + latent * 4.0 + rng.gen_range(-0.6..0.6), 1, 5);
            let mut answers = match form {
                Form::A11 => [
                    "satisfaction",
                    "trust",
                    "effectiveness",
                    "ease",
                    "efficiency",
                    "equity",
                    "employee_helpfulness",
                ]
                .into_iter()
                .map(|k| PlannedAnswer::Score(k, five(rng)))
                .collect(),
                Form::Csat => vec![PlannedAnswer::Score("csat", five(rng))],
                Form::Nps => vec![PlannedAnswer::Score(
                    "nps",
                    clamp(latent * 11.0 - 0.2 + rng.gen_range(-1.2..1.2), 0, 10),
                )],
                Form::Ces => vec![PlannedAnswer::Score(
                    "ces",
                    clamp(1.0 + latent * 6.0 + rng.gen_range(-0.8..0.8), 1, 7),
                )],
            };
            if rng.gen_bool(0.35) {
                let pool = if latent > 0.62 {
                    PRAISE
                } else if latent > 0.45 {
                    NEUTRAL
                } else {
                    CRITICISM
                };
                let mut text = pick(rng, pool).replace("{thing}", spec.thing);
                // A few people leave contact details in comments; the
                // service masks them in the analysis copy.
                if pool == CRITICISM && rng.gen_bool(0.08) {
                    text.push_str(&format!(
                        " Call me on 04{:02} {:03} {:03}.",
                        i % 100,
                        i % 997,
                        i % 991
                    ));
                }
                answers.push(PlannedAnswer::Comment(text));
            }
            PlannedResponse {
                row_id: format!("demo-{}-{:06}", spec.id, i + 1),
                form,
                submit_ms,
                channel,
                unit,
                client: client.map(|c| c.id.clone()),
                contact_agreed: client.is_some() && rng.gen_bool(0.5),
                answers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: i64 = 1_790_000_000_000;

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a = plan(7, 0.02, ANCHOR);
        let b = plan(7, 0.02, ANCHOR);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(format!("{:?}", x.complaints), format!("{:?}", y.complaints));
            assert_eq!(format!("{:?}", x.responses), format!("{:?}", y.responses));
        }
    }

    #[test]
    fn everything_happened_in_the_last_year() {
        for agency in plan(1, 0.05, ANCHOR) {
            for c in &agency.complaints {
                let mut last = c.complaint.receive_time.as_ref().map(|t| t.seconds * 1000);
                assert!(last.is_some_and(|t| t >= ANCHOR - (HISTORY_DAYS + 1) * DAY));
                for s in &c.steps {
                    let t = s.time.as_ref().map(|t| t.seconds * 1000);
                    assert!(t >= last, "steps go forward");
                    assert!(t.is_some_and(|t| t < ANCHOR), "no step in the future");
                    last = t;
                }
            }
            assert!(agency.responses.iter().all(|r| r.submit_ms < ANCHOR));
        }
    }

    #[test]
    fn agencies_differ_in_timeliness() {
        let plans = plan(3, 0.5, ANCHOR);
        let late_share = |p: &AgencyPlan| {
            let late = p
                .complaints
                .iter()
                .filter(|c| {
                    let receive = c.complaint.receive_time.as_ref().map_or(0, |t| t.seconds);
                    c.steps.iter().any(|s| {
                        s.action == cpb::historic_step::Action::Acknowledge as i32
                            && s.time.as_ref().map_or(0, |t| t.seconds) - receive > 4 * 86_400
                    })
                })
                .count();
            late as f64 / p.complaints.len() as f64
        };
        let passports = plans
            .iter()
            .find(|p| p.spec.id == "passports")
            .map(late_share);
        let customs = plans
            .iter()
            .find(|p| p.spec.id == "customs")
            .map(late_share);
        assert!(passports < customs, "{passports:?} vs {customs:?}");
    }
}
