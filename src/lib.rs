//! lite-apiserver: a caching mTLS proxy for the Kubernetes apiserver on edge nodes.
//!
//! One thread runs a mio event loop (`reactor`) over client connections (`client`)
//! and connections to the cloud (`upstream`), moving each request through an
//! exchange (`proxy`) or answering it from the cache (`offline`, `cache`). Helper
//! threads write the cache, probe the cloud (`health`) and reload certificates
//! (`certs`); `server` wires them together.
//!
//! Only what the binary, the integration tests and the fuzz targets use is public;
//! everything else is `pub(crate)`, so the compiler reports what nothing uses.

pub mod body;
pub mod cache;
pub mod certs;
pub(crate) mod client;
pub(crate) mod clock;
pub(crate) mod cloud;
pub(crate) mod cloud_client;
pub mod config;
#[cfg(test)]
mod connection_tests;
pub(crate) mod content_encoding;
pub(crate) mod diagnostics;
pub mod gzip;
pub(crate) mod health;
pub mod http1;
pub mod in_cluster;
pub mod issuer_keys;
pub mod jwt;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod offline;
pub(crate) mod offline_watch;
pub(crate) mod plan;
pub mod protobuf;
pub(crate) mod proxy;
pub(crate) mod queue;
pub(crate) mod reactor;
pub(crate) mod sdnotify;
pub mod server;
pub(crate) mod signals;
pub(crate) mod slab;
pub(crate) mod status;
pub(crate) mod store_memo;
#[cfg(test)]
mod testing;
pub(crate) mod timer;
pub(crate) mod tls;
pub(crate) mod token_cache;
pub(crate) mod token_identity;
pub mod token_request;
pub(crate) mod transport;
pub(crate) mod tunnel;
pub(crate) mod upstream;
pub mod watch_frames;
pub mod x509;
