//! Strait's engine: everything `strait-egress` and `strait-ingress` do, shared.
//!
//! A byte's path, module by module: [`listener`] accepts, [`connection`] terminates TLS
//! (rustls, see [`tls`]) and picks a [`route`] by listener or SNI, [`upstream`] resolves
//! ([`resolve`]) and connects with origination TLS, [`relay`] pumps bytes, and
//! [`access_log`] writes one line at close. [`config`] is the file format, [`gateway`]
//! runs it all, [`cli`] is the command line both binaries share, and [`certs`] makes
//! demo and test certificates.

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod certs;
pub mod cli;
pub mod config;
pub mod connection;
pub mod diagnose;
pub mod endpoints;
pub mod error;
pub mod fdlimit;
pub mod gateway;
pub mod hbone;
pub mod health;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod otel;
pub mod overload;
pub mod protocol;
pub mod proxy_protocol;
pub mod recheck;
pub mod relay;
pub mod resolve;
pub mod route;
pub mod socket;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod upstream;
pub mod watch;
