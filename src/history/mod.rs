//! What kefu keeps about the past: the audit log, reports, exports, retention and backups.

pub mod audit;
pub mod backup;
pub mod daily_figures;
pub mod export;
pub mod reports;
pub mod retention;
