//! Fail-closed audit (`audit.fail_closed: true`): while any sink could not store a record —
//! down with no spool (or a full or broken one), or its queue full — new requests are refused
//! with 503 rather than run unrecorded.

use std::sync::Arc;

use http::{HeaderValue, header};

use super::{Denial, Reason};
use crate::audit::Auditor;

pub struct AuditGate {
    auditor: Arc<Auditor>,
}

impl AuditGate {
    pub fn new(auditor: Arc<Auditor>) -> Self {
        Self { auditor }
    }

    pub fn run(&self) -> Result<(), Denial> {
        if self.auditor.can_record() {
            return Ok(());
        }
        Err(Denial::new(Reason::AuditUnavailable)
            .with_detail("an audit sink cannot store records")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
    }
}
