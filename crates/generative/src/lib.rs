//! Generative models for forja: normalizing flows with exact log-likelihood ([`flows`]: every
//! layer maps both ways and reports log|det J| in both directions) and the variational
//! autoencoder ([`vae`]). The flows register as models (`flow-planar`, `maf`, `iresnet`,
//! `realnvp`, `realnvp-image`) and train by maximum likelihood ([`FlowTask`]); the VAEs
//! (`vae-mlp`, `vae-conv`, `vae-mlp-2d`, `vae-planar` with a planar-flow posterior) on the ELBO
//! ([`VaeTask`]); `gan-mlp`, `gan-mlp-minimax`, `wgan`, `wgan-gp` and, on images with DCGAN's
//! networks ([`dcgan`]), `dcgan`, `wgan-conv`, `wgan-gp-conv` adversarially ([`gan`],
//! [`GanTask`]).

pub mod dcgan;
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
