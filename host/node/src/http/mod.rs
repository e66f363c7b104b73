//! The node's HTTP side: the JSON API and dashboard ([`api`]), the view
//! types the API serves and the CLI reads ([`view`]), Prometheus metrics
//! ([`metrics`]). It talks to the loop only through [`crate::cmd::Cmd`]
//! and reads what the loop published (the [`view::Hub`]) or committed (the
//! store, through a `StoreReader`).

pub mod api;
pub mod dashboard;
pub mod metrics;
pub mod view;

pub use api::spawn;
