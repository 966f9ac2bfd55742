//! Bearer-token authentication for Touchstone services: JWT verification against a JWKS
//! (RS256 and ES256 only), the verified [`Caller`] with its roles and agency scope, a tonic
//! interceptor that puts the caller into each request (or the narrower
//! caller a service acts as, see [`ACT_AS_HEADER`]), and the development signing key used
//! by `touchstone up` and `touchstone token`.

mod access;
mod caller;
mod delegation;
mod devkey;
mod error;
mod interceptor;
mod service_token;
mod verifier;

pub use access::{Denied, Target, authorize};
pub use caller::{AgencyScope, Caller, Role};
pub use delegation::{ACT_AS_HEADER, DelegationError, act_as_value};
pub use devkey::{DevKey, TokenRequest};
pub use error::AuthError;
pub use interceptor::{AuthInterceptor, ERROR_DOMAIN};
pub use service_token::ServiceToken;
pub use verifier::{AuthConfig, Verifier};
