//! Generative models for forja: normalizing flows with exact log-likelihood ([`flows`]: every
//! layer maps both ways and reports log|det J| in both directions) and the variational
//! autoencoder ([`vae`]). The flows register as models (`flow-planar`, `maf`, `iresnet`,
//! `realnvp`, `realnvp-image`) and train by maximum likelihood ([`FlowTask`]); `vae-mlp` trains
//! on the ELBO ([`VaeTask`]).

mod error;
pub mod flows;
mod models;
pub mod picture;
mod task;
pub mod vae;
mod vae_task;

pub use error::{GenerativeError, Result};
pub use task::{DataKind, FlowTask, LOGIT_ALPHA};
pub use vae_task::{VaeTask, EVAL_IWAE_K};
