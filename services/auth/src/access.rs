//! The one decision "may caller C act with one of roles R in agency A", used by every
//! service and the gateway (DESIGN §4).
//!
//! A role applies only in its own scope. Agency roles (`officer`, `senior_officer`,
//! `analyst`, `agency_admin`, `intake`) act only in the token's own `agency`; hub roles
//! (`hub_admin`, `service`) act only in the agencies the `agencies` claim lists (`*` = all).
//! A token that holds both kinds never lends one kind's scope to the other: an officer of
//! `b` who is also hub_admin for `a` may do in `a` only what a hub_admin may.

use crate::caller::{AgencyScope, Caller, Role};

/// What is being reached, which decides how a refusal for another agency reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A named resource (`agencies/a/clients/c`): another agency's is NOT_FOUND, so that
    /// its existence stays private.
    Named,
    /// A collection or an agency-wide operation (`agencies/a`): another agency's is
    /// PERMISSION_DENIED.
    Collection,
}

/// Why [`authorize`] refused. Services map it onto their own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The caller holds none of the roles the action needs, in any scope: it learns
    /// nothing about any agency.
    Roles,
    /// The caller holds a needed role, but not in this agency, and the target is named.
    NotFound,
    /// The caller holds a needed role, but not in this agency, and the target is a
    /// collection.
    Agency,
}

impl Denied {
    /// A message safe to show the caller.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Roles => "the caller's roles do not allow this",
            Denied::NotFound => "not found",
            Denied::Agency => "the caller's token does not cover this agency",
        }
    }
}

impl Role {
    /// Whether this is a hub role, scoped by the `agencies` claim rather than by `agency`.
    pub fn is_hub(self) -> bool {
        matches!(self, Role::HubAdmin | Role::Service)
    }
}

impl Caller {
    /// Whether `role` applies in agency `agency`: held, and `agency` is inside that
    /// role's own scope. An empty agency is in no scope.
    pub fn acts_as(&self, role: Role, agency: &str) -> bool {
        if agency.is_empty() || !self.roles.contains(&role) {
            return false;
        }
        if role.is_hub() {
            match &self.agencies {
                AgencyScope::Own => false,
                AgencyScope::List(list) => list.iter().any(|a| a == agency),
                AgencyScope::All => true,
            }
        } else {
            self.agency.as_deref() == Some(agency)
        }
    }

    /// Whether any of `roles` applies in `agency`.
    pub fn acts_as_any(&self, roles: &[Role], agency: &str) -> bool {
        roles.iter().any(|r| self.acts_as(*r, agency))
    }

    /// Whether any of `roles` applies in every agency (a hub role with `agencies: "*"`).
    pub fn acts_everywhere_as_any(&self, roles: &[Role]) -> bool {
        self.agencies == AgencyScope::All
            && roles.iter().any(|r| r.is_hub() && self.roles.contains(r))
    }

    /// Whether the caller holds any role at all in `agency`: reads of what every role
    /// of an agency may see (its directory entry) use this.
    pub fn acts_in(&self, agency: &str) -> bool {
        self.acts_as_any(&Role::ALL, agency)
    }
}

/// May `caller` act with one of `roles` in `agency`? The one decision every service makes
/// before it touches an agency's data.
pub fn authorize(
    caller: &Caller,
    roles: &[Role],
    agency: &str,
    target: Target,
) -> Result<(), Denied> {
    if caller.acts_as_any(roles, agency) {
        return Ok(());
    }
    if !caller.has_any(roles) {
        return Err(Denied::Roles);
    }
    Err(match target {
        Target::Named => Denied::NotFound,
        Target::Collection => Denied::Agency,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn caller(agency: Option<&str>, agencies: AgencyScope, roles: &[Role]) -> Caller {
        Caller {
            subject: "u1".into(),
            agency: agency.map(str::to_owned),
            agencies,
            roles: roles.iter().copied().collect(),
        }
    }

    /// Every token shape: each subset of up to two roles, each `agency`, each `agencies`.
    fn every_caller() -> Vec<Caller> {
        let mut role_sets: Vec<Vec<Role>> = vec![vec![]];
        for (i, a) in Role::ALL.iter().enumerate() {
            role_sets.push(vec![*a]);
            for b in &Role::ALL[i + 1..] {
                role_sets.push(vec![*a, *b]);
            }
        }
        let agencies = [
            AgencyScope::Own,
            AgencyScope::List(vec!["a".into()]),
            AgencyScope::List(vec!["b".into()]),
            AgencyScope::List(vec!["a".into(), "b".into()]),
            AgencyScope::All,
        ];
        let mut out = Vec::new();
        for roles in &role_sets {
            for agency in [None, Some("a"), Some("b")] {
                for scope in &agencies {
                    out.push(caller(agency, scope.clone(), roles));
                }
            }
        }
        out
    }

    /// Independent statement of the rule: the roles that apply in `agency`.
    fn roles_in(c: &Caller, agency: &str) -> BTreeSet<Role> {
        let hub_scope = match &c.agencies {
            AgencyScope::Own => false,
            AgencyScope::List(l) => l.iter().any(|x| x == agency),
            AgencyScope::All => true,
        };
        let own = c.agency.as_deref() == Some(agency);
        c.roles
            .iter()
            .copied()
            .filter(|r| match r {
                Role::HubAdmin | Role::Service => hub_scope,
                _ => own,
            })
            .collect()
    }

    #[test]
    fn every_role_combination_acts_only_in_its_own_scope() {
        let actions: Vec<Vec<Role>> = Role::ALL
            .iter()
            .map(|r| vec![*r])
            .chain([
                vec![Role::Officer, Role::SeniorOfficer],
                vec![Role::Officer, Role::SeniorOfficer, Role::Service],
                vec![Role::Analyst, Role::AgencyAdmin, Role::HubAdmin],
            ])
            .collect();
        for c in every_caller() {
            for roles in &actions {
                for agency in ["a", "b", "c"] {
                    let applies = roles_in(&c, agency);
                    let expected = roles.iter().any(|r| applies.contains(r));
                    for target in [Target::Named, Target::Collection] {
                        let got = authorize(&c, roles, agency, target);
                        assert_eq!(got.is_ok(), expected, "{c:?} {roles:?} in {agency}");
                        if let Err(d) = got {
                            let want = if !c.has_any(roles) {
                                Denied::Roles
                            } else if target == Target::Named {
                                Denied::NotFound
                            } else {
                                Denied::Agency
                            };
                            assert_eq!(d, want, "{c:?} {roles:?} in {agency}");
                        }
                    }
                }
                assert!(authorize(&c, roles, "", Target::Named).is_err());
            }
        }
    }

    #[test]
    fn a_hub_role_never_lends_its_scope_to_an_agency_role() {
        // The breach of issue 11: officer of b, hub_admin (or service) for a.
        for hub in [Role::HubAdmin, Role::Service] {
            let c = caller(
                Some("b"),
                AgencyScope::List(vec!["a".into()]),
                &[Role::Officer, hub],
            );
            assert_eq!(
                authorize(&c, &[Role::Officer], "a", Target::Named),
                Err(Denied::NotFound)
            );
            assert!(authorize(&c, &[Role::Officer], "b", Target::Named).is_ok());
            assert!(authorize(&c, &[hub], "a", Target::Named).is_ok());
            assert_eq!(
                authorize(&c, &[hub], "b", Target::Collection),
                Err(Denied::Agency),
                "a hub role does not act in the token's own agency unless listed"
            );
        }
        // An agency role never reaches past `agency`, whatever `agencies` says.
        let c = caller(Some("a"), AgencyScope::All, &[Role::AgencyAdmin]);
        assert!(!c.acts_as(Role::AgencyAdmin, "b"));
        assert!(!c.acts_everywhere_as_any(&[Role::AgencyAdmin]));
        let s = caller(None, AgencyScope::All, &[Role::Service]);
        assert!(s.acts_everywhere_as_any(&[Role::Service]));
        assert!(s.acts_in("anything") && !s.acts_in(""));
    }
}
