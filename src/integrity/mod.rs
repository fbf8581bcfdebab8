//! Tool integrity: what servers say about their tools, and what their results carry. Definitions
//! are fingerprinted and held to their pins (rug pulls), their text scanned for instructions
//! aimed at the model (tool poisoning), and results scanned for secrets.

pub mod config;
pub mod fingerprint;
pub mod pins;
pub mod poison;
pub mod secrets;
pub mod share;
pub mod state;

pub use config::IntegrityConfig;
pub use state::{Integrity, Note, load_pins};
