//! Generative models for forja: normalizing flows with exact log-likelihood ([`flows`]: every
//! layer maps both ways and reports log|det J| in both directions) and the variational
//! autoencoder ([`vae`]). The flows register as models (`flow-planar`, `maf`, `iresnet`,
//! `realnvp`, `realnvp-image`) and train by maximum likelihood ([`FlowTask`]); `vae-mlp` trains
//! on the ELBO ([`VaeTask`]); `gan-mlp`, `gan-mlp-minimax`, `wgan` and `wgan-gp` adversarially
//! ([`gan`], [`GanTask`]).

mod error;
pub mod flows;
pub mod gan;
mod gan_task;
mod models;
pub mod noise;
pub mod picture;
mod task;
pub mod vae;
mod vae_task;

pub use error::{GenerativeError, Result};
pub use gan_task::{GanTask, COVERED_MIN, EVAL_SAMPLES, QUALITY_STDS};
pub use task::{DataKind, FlowTask, LOGIT_ALPHA};
pub use vae_task::{VaeTask, EVAL_IWAE_K};
