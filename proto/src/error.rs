//! Attaching an [`ErrorDetail`] to a gRPC status, reading it back, and
//! printing it as the operator should read it.
//!
//! The detail travels as the encoded message in the status's `details`
//! bytes (gRPC's `grpc-status-details-bin`), so the status code still says
//! what class of failure it is to any gRPC client, while ours print the
//! precise sentence: `no quorum: unreachable n2, n3` or
//! `haproxy.cfg:12: server 'a': weight 300 is out of range 0..=256`.

use std::fmt;

use prost::Message;

use crate::v1::{Diagnostic, ErrorDetail, ErrorKind, Severity};

impl ErrorDetail {
    /// A detail of `kind` with its sentence.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorDetail {
            kind: kind as i32,
            message: message.into(),
            ..Default::default()
        }
    }

    /// The leader cannot reach a majority: names the voters that did not
    /// answer.
    pub fn no_quorum(unreachable: impl IntoIterator<Item = u64>) -> Self {
        let mut unreachable: Vec<u64> = unreachable.into_iter().collect();
        unreachable.sort_unstable();
        let names: Vec<String> = unreachable.iter().map(|id| format!("n{id}")).collect();
        let message = if names.is_empty() {
            "no quorum".to_string()
        } else {
            format!("no quorum: unreachable {}", names.join(", "))
        };
        ErrorDetail {
            unreachable_nodes: unreachable,
            ..ErrorDetail::new(ErrorKind::NoQuorum, message)
        }
    }

    /// A configuration that does not validate, one diagnostic per problem.
    pub fn invalid_config(diagnostics: Vec<Diagnostic>) -> Self {
        let errors = diagnostics
            .iter()
            .filter(|d| d.severity() != Severity::Warning)
            .count();
        ErrorDetail {
            diagnostics,
            ..ErrorDetail::new(
                ErrorKind::InvalidConfig,
                format!(
                    "configuration rejected: {errors} error{}",
                    if errors == 1 { "" } else { "s" }
                ),
            )
        }
    }

    /// The gRPC status carrying this detail. The code follows the kind so
    /// clients that do not read details still retry (or not) correctly.
    pub fn into_status(self) -> tonic::Status {
        let code = match self.kind() {
            ErrorKind::NoQuorum => tonic::Code::Unavailable,
            ErrorKind::NotLeader => tonic::Code::FailedPrecondition,
            ErrorKind::VersionConflict => tonic::Code::Aborted,
            ErrorKind::InvalidConfig => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Refused => tonic::Code::FailedPrecondition,
            ErrorKind::Unreachable => tonic::Code::Unavailable,
            ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Internal | ErrorKind::Unspecified => tonic::Code::Internal,
        };
        let message = self.to_string();
        tonic::Status::with_details(code, message, self.encode_to_vec().into())
    }
}

/// The [`ErrorDetail`] a failed call carried, if any. `None` for statuses
/// from elsewhere (a proxy, tonic's own transport errors) or with details
/// that do not decode.
pub fn status_detail(status: &tonic::Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}

/// The sentence, then one line per diagnostic in `FILE:LINE: ...` form.
impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for d in &self.diagnostics {
            write!(f, "\n{}", DiagnosticDisplay(d))?;
        }
        Ok(())
    }
}

/// Prints a [`Diagnostic`] as compilers do: `FILE:LINE:COL: severity: field: message`,
/// leaving out the parts that are unknown.
pub struct DiagnosticDisplay<'a>(pub &'a Diagnostic);

impl fmt::Display for DiagnosticDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let file = if d.file.is_empty() {
            "<inline>"
        } else {
            &d.file
        };
        f.write_str(file)?;
        if d.line > 0 {
            write!(f, ":{}", d.line)?;
            if d.column > 0 {
                write!(f, ":{}", d.column)?;
            }
        }
        f.write_str(": ")?;
        if d.severity() == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !d.field.is_empty() {
            write!(f, "{}: ", d.field)?;
        }
        f.write_str(&d.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_quorum_names_the_unreachable_voters_in_order() {
        let detail = ErrorDetail::no_quorum([3, 2]);
        assert_eq!(detail.to_string(), "no quorum: unreachable n2, n3");
        assert_eq!(detail.unreachable_nodes, vec![2, 3]);
    }

    #[test]
    fn detail_survives_a_status_round_trip() {
        let detail = ErrorDetail::invalid_config(vec![
            Diagnostic {
                severity: Severity::Error as i32,
                file: "haproxy.cfg".into(),
                line: 12,
                column: 0,
                field: "server a".into(),
                message: "weight 300 is out of range 0..=256".into(),
            },
            Diagnostic {
                severity: Severity::Warning as i32,
                file: String::new(),
                line: 0,
                column: 0,
                field: String::new(),
                message: "'daemon' is ignored".into(),
            },
        ]);
        let status = detail.clone().into_status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "configuration rejected: 1 error\n\
             haproxy.cfg:12: server a: weight 300 is out of range 0..=256\n\
             <inline>: warning: 'daemon' is ignored"
        );
        assert_eq!(status_detail(&status), Some(detail));
    }

    #[test]
    fn foreign_status_has_no_detail() {
        assert_eq!(status_detail(&tonic::Status::unavailable("down")), None);
        let garbage = tonic::Status::with_details(tonic::Code::Internal, "x", vec![0xff; 3].into());
        assert_eq!(status_detail(&garbage), None);
    }
}
