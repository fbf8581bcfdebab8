//! Authentication: every caller proven by one of the configured authenticators, yielding a
//! `Principal` that later checks (session binding, policy, rate limits, audit) key on.

pub mod apikeys;
pub mod chain;
mod https;
mod jwks;
pub mod jwt;
pub mod kubernetes;
pub mod metadata;
pub mod mtls;
