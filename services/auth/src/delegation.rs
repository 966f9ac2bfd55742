//! Acting for an agency system: a caller holding the `service` role in an
//! agency may make one call as that agency's `intake` and nothing more, by
//! sending the `touchstone-act-as` header beside its own token. The gateway
//! does so for an Open311 `api_key` (DESIGN §11), which is no token of its
//! own: the services still verify a signed token (the gateway's) and then
//! see only an `intake` caller of that one agency, whose subject names the
//! key and the service that spoke for it.

use crate::caller::{AgencyScope, Caller, Role};

/// The metadata key that asks to act as another, narrower caller.
pub const ACT_AS_HEADER: &str = "touchstone-act-as";

/// The roles a service may act as: only `intake`, which may submit and
/// never read.
const DELEGABLE: [Role; 1] = [Role::Intake];

/// Longest subject a delegation may name.
const MAX_SUBJECT: usize = 200;

/// Why a delegation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationError {
    /// The header is not `<role> agencies/<agency> <subject>`.
    Malformed,
    /// The role may not be delegated, or the caller holds no `service`
    /// role in that agency.
    NotAllowed,
}

impl DelegationError {
    /// A message safe to show the caller.
    pub fn message(self) -> &'static str {
        match self {
            DelegationError::Malformed => {
                "touchstone-act-as must be `<role> agencies/<agency> <subject>`"
            }
            DelegationError::NotAllowed => {
                "the caller may not act as this role in this agency (only a service of the agency may act as its intake)"
            }
        }
    }
}

/// The header value that asks to act as `role` of `agency` for `subject`.
pub fn act_as_value(role: Role, agency: &str, subject: &str) -> String {
    format!("{} agencies/{agency} {subject}", role.as_str())
}

impl Caller {
    /// The caller this one may act as, from the value of
    /// [`ACT_AS_HEADER`]: an agency role of one agency, if the role is
    /// delegable and this caller holds `service` there.
    pub fn act_as(&self, value: &str) -> Result<Caller, DelegationError> {
        let mut parts = value.split(' ');
        let (Some(role), Some(agency), Some(subject), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DelegationError::Malformed);
        };
        let agency = agency
            .strip_prefix("agencies/")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or(DelegationError::Malformed)?;
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT
            || subject.chars().any(|c| c.is_control())
        {
            return Err(DelegationError::Malformed);
        }
        let role = Role::parse(role).ok_or(DelegationError::Malformed)?;
        if !DELEGABLE.contains(&role) || !self.acts_as(Role::Service, agency) {
            return Err(DelegationError::NotAllowed);
        }
        Ok(Caller {
            subject: format!("{subject} via {}", self.subject),
            agency: Some(agency.to_string()),
            agencies: AgencyScope::Own,
            roles: [role].into_iter().collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caller(agency: Option<&str>, agencies: AgencyScope, roles: &[Role]) -> Caller {
        Caller {
            subject: "gateway".into(),
            agency: agency.map(str::to_owned),
            agencies,
            roles: roles.iter().copied().collect(),
        }
    }

    #[test]
    fn a_service_acts_as_intake_of_an_agency_in_its_scope_only() {
        let value = act_as_value(Role::Intake, "a", "agencies/a/apiKeys/k");
        let s = caller(None, AgencyScope::List(vec!["a".into()]), &[Role::Service]);
        let acting = s.act_as(&value).unwrap();
        assert_eq!(acting.agency.as_deref(), Some("a"));
        assert_eq!(acting.agencies, AgencyScope::Own);
        assert_eq!(
            acting.roles.iter().copied().collect::<Vec<_>>(),
            [Role::Intake]
        );
        assert_eq!(acting.subject, "agencies/a/apiKeys/k via gateway");
        assert!(acting.acts_as(Role::Intake, "a"));
        assert!(!acting.acts_as(Role::Service, "a"));
        assert!(!acting.acts_in("b"));
        // Outside its scope, or without the service role, nothing.
        let b = act_as_value(Role::Intake, "b", "k");
        assert_eq!(s.act_as(&b).unwrap_err(), DelegationError::NotAllowed);
        let all = caller(None, AgencyScope::All, &[Role::Service]);
        assert!(all.act_as(&b).is_ok());
        for roles in [
            &[Role::HubAdmin][..],
            &[Role::AgencyAdmin],
            &[Role::Intake],
            &[Role::Officer, Role::SeniorOfficer],
        ] {
            for scope in [AgencyScope::Own, AgencyScope::All] {
                let c = caller(Some("a"), scope, roles);
                assert_eq!(
                    c.act_as(&value).unwrap_err(),
                    DelegationError::NotAllowed,
                    "{roles:?}"
                );
            }
        }
        // Only intake may be delegated, never a role that reads.
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Intake) {
            let v = act_as_value(role, "a", "k");
            assert_eq!(all.act_as(&v).unwrap_err(), DelegationError::NotAllowed);
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let s = caller(None, AgencyScope::All, &[Role::Service]);
        for v in [
            "",
            "intake",
            "intake agencies/a",
            "intake a k",
            "intake agencies/ k",
            "intake agencies/a/b k",
            "intake agencies/a k extra",
            "intake  agencies/a k",
            "Intake agencies/a k",
            "intake agencies/a k\u{7}",
        ] {
            assert_eq!(
                s.act_as(v).unwrap_err(),
                DelegationError::Malformed,
                "{v:?}"
            );
        }
        let long = "k".repeat(MAX_SUBJECT + 1);
        assert_eq!(
            s.act_as(&format!("intake agencies/a {long}")).unwrap_err(),
            DelegationError::Malformed
        );
    }
}
