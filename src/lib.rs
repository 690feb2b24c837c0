//! lite-apiserver: a caching mTLS proxy for the Kubernetes apiserver on edge nodes.
//!
//! One thread runs a mio event loop (`reactor`) over client connections (`client`)
//! and connections to the cloud (`upstream`), moving each request through an
//! exchange (`proxy`) or answering it from the cache (`offline`, `cache`). Helper
//! threads write the cache, probe the cloud (`health`) and reload certificates
//! (`certs`); `server` wires them together.

pub mod body;
pub mod cache;
pub mod certs;
pub mod cloud_client;
pub mod client;
pub mod cloud;
pub mod config;
pub mod diagnostics;
pub mod health;
pub mod http1;
pub mod issuer_keys;
pub mod jwt;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod offline_watch;
pub mod protobuf;
pub mod plan;
pub mod proxy;
pub mod queue;
pub mod reactor;
pub mod sdnotify;
pub mod server;
pub mod signals;
pub mod slab;
pub mod status;
pub mod timer;
pub mod token_request;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod upstream;
pub mod x509;
