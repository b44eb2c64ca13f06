//! harbormaster runs your services, routes HTTP traffic to them, checks their
//! health, and starts, restarts, reloads and stops them without dropping a
//! request.
//!
//! Layout (see `ARCHITECTURE.md`): `config` turns the TOML file into a
//! validated [`config::Config`]; `cli` holds one module per command-line verb.
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod children;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod health;
pub mod lifecycle;
pub mod mcp;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod sharded;
pub mod supervisor;
pub mod systemd;

pub use config::Config;
