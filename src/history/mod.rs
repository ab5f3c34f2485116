//! What kefu keeps about the past: the audit log, reports, exports, retention, backups (with the
//! uploads, in one archive), and one visitor's data (its export and erasure).

pub mod archive;
pub mod audit;
pub mod backup;
pub mod daily_figures;
pub mod export;
pub mod reports;
pub mod retention;
pub mod visitor_data;
