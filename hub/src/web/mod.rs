//! The hub's dashboard and the operators' read API, on their own listener (`[web]`): HTTPS in
//! production (the same rustls setup as the enrollment API), plain HTTP only on loopback.
//! Edges talk to `[api]`; people and their scripts talk to `[web]`, so each can be bound to
//! the network its users are on.
//!
//! Every page and API call is an operator's: a session (the dashboard) or a bearer token (the
//! API), both made from accounts created with `hub operator`. A tenant-scoped operator's
//! queries carry the tenant, so other tenants' rows are never read.

pub mod alerts;
pub mod auth;
pub mod config;
pub mod edge;
mod fallback;
pub mod fleet;
pub mod freshness;
pub mod operators;
mod pages;
mod provision;
pub mod render;
mod server;

pub use server::serve;
