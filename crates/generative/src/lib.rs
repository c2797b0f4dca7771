//! Generative models for forja. So far: normalizing flows with exact log-likelihood
//! ([`flows`]): every layer maps both ways and reports log|det J| in both directions.

mod error;
pub mod flows;

pub use error::{GenerativeError, Result};
