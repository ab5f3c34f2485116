//! The name a node goes by in the rows it holds (an outbox claim, a job's run, a routing lease),
//! checked once so that every statement that writes one can trust it; and the checks of the other
//! values those statements take (site names, durations, ids).

use std::fmt;
use std::time::Duration;

use crate::cluster::postgres::PostgresError;

/// The longest node name, and the longest site name a lease is taken for.
pub const MAX_NAME_LEN: usize = 200;

/// A node's name: unique among the nodes sharing a database (a host name and a process id, for
/// example), 1 to [`MAX_NAME_LEN`] bytes, without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: &str) -> Result<NodeName, PostgresError> {
        check_name("node name", name)?;
        Ok(NodeName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Refuses an empty, overlong or control-character name (`what` says which in the error).
pub fn check_name(what: &str, name: &str) -> Result<(), PostgresError> {
    if name.is_empty() {
        return Err(PostgresError::Invalid(format!("the {what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PostgresError::Invalid(format!("the {what} is longer than {MAX_NAME_LEN} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(PostgresError::Invalid(format!("the {what} contains a control character")));
    }
    Ok(())
}

/// A duration as the milliseconds SQL adds to `kefu_now_ms()`, refused when zero or longer than
/// `at_most` (`what` names it in the error).
pub fn checked_millis(what: &str, duration: Duration, at_most: Duration) -> Result<i64, PostgresError> {
    if duration.is_zero() {
        return Err(PostgresError::Invalid(format!("the {what} is zero")));
    }
    if duration > at_most {
        return Err(PostgresError::Invalid(format!("the {what} is longer than {} s", at_most.as_secs())));
    }
    i64::try_from(duration.as_millis()).map_err(|_| PostgresError::Invalid(format!("the {what} is out of range")))
}

/// An id as PostgreSQL's `bigint`, refused when beyond it (`what` names it in the error).
pub fn checked_id(what: &str, id: u64) -> Result<i64, PostgresError> {
    i64::try_from(id).map_err(|_| PostgresError::Invalid(format!("the {what} {id} is out of range")))
}
