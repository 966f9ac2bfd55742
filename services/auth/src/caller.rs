//! The verified caller of a request: subject, tenant, agency scope and roles.

use std::collections::BTreeSet;
use std::fmt;

/// What a caller may do; see DESIGN.md section 4 for each role's reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Officer,
    SeniorOfficer,
    Analyst,
    AgencyAdmin,
    Intake,
    HubAdmin,
    Service,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Officer,
        Role::SeniorOfficer,
        Role::Analyst,
        Role::AgencyAdmin,
        Role::Intake,
        Role::HubAdmin,
        Role::Service,
    ];

    /// The name used in tokens and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::SeniorOfficer => "senior_officer",
            Role::Analyst => "analyst",
            Role::AgencyAdmin => "agency_admin",
            Role::Intake => "intake",
            Role::HubAdmin => "hub_admin",
            Role::Service => "service",
        }
    }

    /// Exact wire name only; unknown names are `None` so that a token from an identity
    /// provider with extra roles still works with the roles we know.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which agencies a caller may act in besides its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgencyScope {
    /// Only the caller's own `agency`.
    Own,
    /// The listed agencies (and the caller's own `agency`, if any).
    List(Vec<String>),
    /// Every agency (`"agencies": "*"`).
    All,
}

/// The authenticated caller, built only from a verified token. Two callers
/// are equal when every field is: then every service authorizes them alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub subject: String,
    pub agency: Option<String>,
    pub agencies: AgencyScope,
    pub roles: BTreeSet<Role>,
}

impl Caller {
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    pub fn has_any(&self, rs: &[Role]) -> bool {
        rs.iter().any(|r| self.roles.contains(r))
    }

    /// The caller that [`crate::AuthInterceptor`] stored in the request; `UNAUTHENTICATED`
    /// when the service was wired without the interceptor or the request bypassed it.
    pub fn from_request<T>(req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("request is not authenticated"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caller(agency: Option<&str>, agencies: AgencyScope) -> Caller {
        Caller {
            subject: "u1".into(),
            agency: agency.map(str::to_owned),
            agencies,
            roles: [Role::Officer].into_iter().collect(),
        }
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Role::parse("Officer"), None);
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn roles() {
        let c = caller(Some("a"), AgencyScope::Own);
        assert!(c.has_role(Role::Officer));
        assert!(!c.has_role(Role::HubAdmin));
        assert!(c.has_any(&[Role::HubAdmin, Role::Officer]));
        assert!(!c.has_any(&[Role::HubAdmin, Role::Service]));
        assert!(!c.has_any(&[]));
    }

    #[test]
    fn from_request_requires_interceptor() {
        let mut req = tonic::Request::new(());
        let err = Caller::from_request(&req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        req.extensions_mut()
            .insert(caller(Some("a"), AgencyScope::Own));
        assert_eq!(Caller::from_request(&req).unwrap().subject, "u1");
    }
}
