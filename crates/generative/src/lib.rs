//! Generative models for forja. So far: normalizing flows with exact log-likelihood
//! ([`flows`]): every layer maps both ways and reports log|det J| in both directions. The flows
//! register as models (`flow-planar`, `maf`, `iresnet`, `realnvp`, `realnvp-image`) and train by
//! maximum likelihood with `cargo xtask train` ([`FlowTask`]).

mod error;
pub mod flows;
mod models;
pub mod picture;
mod task;

pub use error::{GenerativeError, Result};
pub use task::{DataKind, FlowTask, LOGIT_ALPHA};
