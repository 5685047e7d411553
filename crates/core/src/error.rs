//! The one error vocabulary every Cascade crate speaks.
//!
//! Each library crate keeps its own `Error` type (with variants that say exactly what went wrong)
//! and exposes `kind()`, which classifies the error by what a caller can do about it. A server
//! maps the kind to a status code; a CLI to an exit message; a retry loop decides whether to try
//! again. Classify by the caller's options, not by where the error came from: a corrupt file a
//! user uploaded is [`ErrorKind::Invalid`], the same bytes read from our own data directory are
//! [`ErrorKind::Internal`]. A crate that cannot tell the two apart says `Internal`.
//!
//! The enum is deliberately exhaustive (not `#[non_exhaustive]`): code that maps kinds matches
//! every variant, so adding one forces a decision everywhere it matters.

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's input is wrong: bad parameters, a malformed request, data that does not fit.
    /// Do not retry as is; fix the input. HTTP: 400 Bad Request (or 422).
    Invalid,
    /// The thing asked for does not exist (or no longer does). HTTP: 404 Not Found.
    NotFound,
    /// The request is well formed but conflicts with the current state (already exists, a
    /// concurrent change won). Re-read the state and decide again. HTTP: 409 Conflict.
    Conflict,
    /// A dependency is down or the thing is busy (locked, closed, overloaded, failed until a
    /// restart). The request may succeed later: retry with backoff. HTTP: 503 Service Unavailable.
    Unavailable,
    /// Our fault: storage failed, state is corrupt, an invariant broke (a bug). Not the caller's
    /// to fix and unlikely to go away by retrying; log it and alert. HTTP: 500 Internal Server
    /// Error (without the details).
    Internal,
}

impl ErrorKind {
    /// A short, stable, lower-case name (`invalid`, `not_found`, ...), for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn names_are_distinct() {
        let all =
            [ErrorKind::Invalid, ErrorKind::NotFound, ErrorKind::Conflict, ErrorKind::Unavailable, ErrorKind::Internal];
        let names: std::collections::HashSet<_> = all.iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(ErrorKind::NotFound.as_str(), "not_found");
    }
}
