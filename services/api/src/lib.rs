//! Generated gRPC API of Touchstone: one module per proto package, plus the
//! encoded descriptor set for server reflection.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]

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
