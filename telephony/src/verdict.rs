//! What a probe's outcome says about the PBX. Any final response proves its SIP stack is
//! up — a 404, 403, 401 or 501 to OPTIONS is a configuration matter, not a dead PBX — while
//! silence, transport errors and the codes by which a server says it cannot serve are
//! failures.

use crate::options::OptionsResponse;
use crate::Error;

/// How to read a 503.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Count 503 as "overloaded but alive" instead of a failure. A PBX shedding load still
    /// runs, and failing it over moves the load rather than removing it.
    pub overloaded_is_alive: bool,
}

/// The health a probe outcome shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A final response came back; the SIP stack works.
    Alive { status: u16 },
    /// 503 with [`Policy::overloaded_is_alive`] set.
    Overloaded,
    /// No usable answer; `reason` says why, for logs and alerts.
    Failed { reason: String },
}

impl Verdict {
    /// Whether the probe counts as a good sample for rise/fall hysteresis.
    pub fn is_healthy(&self) -> bool {
        !matches!(self, Verdict::Failed { .. })
    }
}

/// Judges one probe outcome.
pub fn verdict(outcome: &Result<OptionsResponse, Error>, policy: Policy) -> Verdict {
    match outcome {
        Ok(resp) => verdict_for_status(resp.status, &resp.reason, policy),
        Err(e) => Verdict::Failed { reason: e.to_string() },
    }
}

/// Judges a final status code.
pub fn verdict_for_status(status: u16, reason: &str, policy: Policy) -> Verdict {
    match status {
        // 408: the server itself timed out; 500: it failed internally (RFC 3261 §21.5.1);
        // 503: it cannot serve now (§21.5.4).
        503 if policy.overloaded_is_alive => Verdict::Overloaded,
        408 | 500 | 503 => Verdict::Failed { reason: format!("answered {status} {reason}") },
        200..=699 => Verdict::Alive { status },
        _ => Verdict::Failed { reason: format!("{status} {reason} is not a final SIP status") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answered(status: u16) -> Result<OptionsResponse, Error> {
        Ok(OptionsResponse {
            status,
            reason: "R".into(),
            rtt: Duration::from_millis(1),
            source: "127.0.0.1:5060".parse().unwrap(),
            headers: vec![],
        })
    }

    #[test]
    fn any_final_answer_but_the_failure_codes_is_alive() {
        for status in [200, 302, 401, 403, 404, 405, 481, 501, 502, 504, 603] {
            assert_eq!(verdict(&answered(status), Policy::default()), Verdict::Alive { status }, "{status}");
        }
    }

    #[test]
    fn failure_codes_timeouts_and_transport_errors_fail() {
        for status in [408, 500, 503] {
            let v = verdict(&answered(status), Policy::default());
            assert!(matches!(&v, Verdict::Failed { reason } if reason.contains(&status.to_string())), "{v:?}");
            assert!(!v.is_healthy());
        }
        let timeout = Err(Error::Timeout {
            target: "127.0.0.1:5060".parse().unwrap(),
            transport: "UDP",
            after: Duration::from_secs(2),
        });
        assert!(
            matches!(verdict(&timeout, Policy::default()), Verdict::Failed { reason } if reason.contains("127.0.0.1:5060"))
        );
        let refused = Err(Error::io("connecting", std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!verdict(&refused, Policy::default()).is_healthy());
        assert!(!verdict(&answered(180), Policy::default()).is_healthy());
    }

    #[test]
    fn a_503_is_overloaded_but_alive_only_when_asked() {
        let lenient = Policy { overloaded_is_alive: true };
        assert_eq!(verdict(&answered(503), lenient), Verdict::Overloaded);
        assert!(Verdict::Overloaded.is_healthy());
        assert_eq!(verdict(&answered(500), lenient), Verdict::Failed { reason: "answered 500 R".into() });
    }
}
