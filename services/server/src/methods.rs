//! The gRPC methods this server knows, read from the descriptor sets it serves, so that
//! request paths chosen by callers never become metric labels or log fields unchecked.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use prost_types::FileDescriptorSet;

/// Label value for any path that is not a known method.
const OTHER: &str = "other";

/// Which RPC a request is, as far as labels and span fields are concerned.
#[derive(Clone, Debug)]
pub(crate) struct Rpc {
    /// Full service name, e.g. `touchstone.register.v1.RegisterService`.
    pub(crate) service: Arc<str>,
    /// Method name, e.g. `GetClient`.
    pub(crate) method: Arc<str>,
}

#[derive(Debug)]
pub(crate) struct KnownMethods {
    by_path: HashMap<String, Rpc>,
    other: Rpc,
}

impl KnownMethods {
    pub(crate) fn from_descriptor_sets(encoded: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut by_path = HashMap::new();
        for bytes in encoded {
            for file in FileDescriptorSet::decode(*bytes)?.file {
                let package = file.package();
                for service in &file.service {
                    let service_name: Arc<str> = if package.is_empty() {
                        service.name().into()
                    } else {
                        format!("{package}.{}", service.name()).into()
                    };
                    for method in &service.method {
                        by_path.insert(
                            format!("/{service_name}/{}", method.name()),
                            Rpc {
                                service: service_name.clone(),
                                method: method.name().into(),
                            },
                        );
                    }
                }
            }
        }
        let other: Arc<str> = OTHER.into();
        Ok(Self {
            by_path,
            other: Rpc {
                service: other.clone(),
                method: other,
            },
        })
    }

    pub(crate) fn lookup(&self, path: &str) -> Rpc {
        self.by_path.get(path).unwrap_or(&self.other).clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_and_unknown_paths_collapse() {
        let methods =
            KnownMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap();

        let check = methods.lookup("/grpc.health.v1.Health/Check");
        assert_eq!(&*check.service, "grpc.health.v1.Health");
        assert_eq!(&*check.method, "Check");

        for path in ["/grpc.health.v1.Health/Nope", "/x/Check", "/", "/metrics"] {
            let rpc = methods.lookup(path);
            assert_eq!((&*rpc.service, &*rpc.method), ("other", "other"), "{path}");
        }
    }

    #[test]
    fn touchstone_descriptor_set_decodes() {
        let methods =
            KnownMethods::from_descriptor_sets(&[touchstone_api::FILE_DESCRIPTOR_SET]).unwrap();
        assert!(
            methods
                .by_path
                .keys()
                .any(|path| path.starts_with("/touchstone."))
        );
    }
}
