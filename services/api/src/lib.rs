//! Generated gRPC API of Touchstone: one module per proto package, plus the
//! encoded descriptor set for server reflection.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]

pub mod codec;

/// Encoded `FileDescriptorSet` of every Touchstone proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/touchstone_descriptor.bin"));

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.common.v1.rs"));
    }
}

pub mod register {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.register.v1.rs"));
    }
}

pub mod complaints {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.complaints.v1.rs"));
    }
}

pub mod feedback {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.feedback.v1.rs"));
    }
}

pub mod kpi {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.kpi.v1.rs"));
    }
}

pub mod gateway {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/touchstone.gateway.v1.rs"));
    }
}

/// A response that names the resource it is about, so that the replay of a
/// stored response can be audited against it and erasure can forget it.
pub trait Named {
    /// The resource's name, e.g. `agencies/a/complaints/c`.
    fn resource_name(&self) -> &str;
}

/// Implements [`Named`] for messages whose `name` field is their resource name.
macro_rules! named {
    ($($t:ty),* $(,)?) => {
        $(impl Named for $t {
            fn resource_name(&self) -> &str {
                &self.name
            }
        })*
    };
}

named!(register::v1::Client, register::v1::Need);

named!(
    complaints::v1::Complaint,
    complaints::v1::Contact,
    complaints::v1::Issue,
);

named!(
    feedback::v1::Survey,
    feedback::v1::CreateTemplateSurveysResponse,
    feedback::v1::Response,
    feedback::v1::Volume,
    feedback::v1::FollowUp,
);

named!(kpi::v1::Standard);

named!(
    gateway::v1::Agency,
    gateway::v1::Unit,
    gateway::v1::PeerGroup,
    gateway::v1::ApiKey,
    gateway::v1::Open311Service,
);
