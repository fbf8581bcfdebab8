#![allow(dead_code)]
//! Shared test bed: a real rmcp upstream and rmcp clients for both eras.

pub mod apiserver;
pub mod audit;
pub mod bed;
pub mod client;
pub mod idp;
pub mod k8s;
pub mod keys;
pub mod metrics;
pub mod peers;
pub mod process;
pub mod ratelimit;
pub mod scripted;
pub mod sentinel;
pub mod stdio;
pub mod tls;
pub mod upstream;
