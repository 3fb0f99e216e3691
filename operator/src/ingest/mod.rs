//! The HTTPS endpoint sniffers post reports to: TLS material ([`tls`]), who may post
//! ([`auth`]), and the server itself ([`server`]).

pub mod auth;
pub mod server;
pub mod tls;

pub use server::{IngestConfig, ReceivedReport, serve};
