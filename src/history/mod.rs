//! What kefu keeps about the past: the audit log, reports, exports, retention and backups
//! (with the uploads, in one archive).

pub mod archive;
pub mod audit;
pub mod backup;
pub mod export;
pub mod reports;
pub mod retention;
