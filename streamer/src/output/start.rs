//! Where a listener starts: the `offset`, `at`, `pump` (and the original's
//! `from`) query parameters, checked and turned into buffer positions.

use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::buffer::Position;
use crate::http::Request;
use crate::stream::{now_micros, Stream};

/// A query parameter that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StartError {
    /// Not a number of seconds.
    #[error("{param}={value:?}: expected a number of seconds >= 0")]
    BadSeconds {
        /// The parameter.
        param: &'static str,
        /// What was given.
        value: String,
    },
    /// Not a time.
    #[error("at={0:?}: expected an RFC 3339 time (2026-11-21T09:00:00Z) or Unix seconds")]
    BadTime(String),
    /// A time after now.
    #[error("at={0:?} is in the future")]
    FutureTime(String),
    /// Nothing to start from.
    #[error("stream {0:?} has no audio in its buffer yet")]
    Empty(String),
}

/// What the query asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartRequest {
    /// Seconds behind live (`offset`, or the original's `from`).
    pub offset: Option<f64>,
    /// Wall-clock start, µs since the epoch.
    pub at: Option<i64>,
    /// Download this many seconds as fast as possible, then end.
    pub pump: Option<f64>,
}

fn seconds(param: &'static str, value: Option<String>) -> Result<Option<f64>, StartError> {
    match value {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..1e9).contains(&s) => Ok(Some(s)),
            _ => Err(StartError::BadSeconds { param, value: v }),
        },
    }
}

/// Parses an `at` value: RFC 3339, or Unix seconds (fractions allowed).
pub fn parse_time(v: &str) -> Result<i64, StartError> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        if s.is_finite() && (0.0..1e11).contains(&s) {
            return Ok((s * 1e6) as i64);
        }
        return Err(StartError::BadTime(v.to_string()));
    }
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|_| StartError::BadTime(v.to_string()))?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|_| StartError::BadTime(v.to_string()))
}

impl StartRequest {
    /// Reads the parameters of a listener request.
    pub fn from_request(req: &Request) -> Result<Self, StartError> {
        let offset = match seconds("offset", req.query_param("offset"))? {
            Some(o) => Some(o),
            None => seconds("from", req.query_param("from"))?,
        };
        let at = match req.query_param("at") {
            None => None,
            Some(v) => {
                let t = parse_time(&v)?;
                if t > now_micros() + 1_000_000 {
                    return Err(StartError::FutureTime(v));
                }
                Some(t)
            }
        };
        let pump = match seconds("pump", req.query_param("pump"))? {
            Some(p) if p > 0.0 => Some(p),
            Some(_) => {
                return Err(StartError::BadSeconds {
                    param: "pump",
                    value: "0".into(),
                })
            }
            None => None,
        };
        Ok(StartRequest { offset, at, pump })
    }

    /// True when the listener asked for a specific place (not just live).
    pub fn is_positioned(&self) -> bool {
        self.offset.is_some() || self.at.is_some() || self.pump.is_some()
    }
}

/// A resolved start.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// First byte to send.
    pub pos: Position,
    /// End of a pump.
    pub end: Option<Position>,
    /// Bytes a pump sends.
    pub content_length: Option<u64>,
    /// Bytes between the start and live now.
    pub lag: u64,
    /// Wall-clock time of the first byte, when known.
    pub time: Option<i64>,
}

/// Turns a request into buffer positions. Live listeners start `burstSeconds`
/// back (on a frame), so players fill their buffer at once; the burst and the
/// live audio are one contiguous run of frames (no chunk skipped at the join,
/// unlike the original).
pub fn resolve(stream: &Arc<Stream>, req: &StartRequest) -> Result<Start, StartError> {
    let b = stream.read_buffer();
    if b.is_empty() && req.is_positioned() {
        return Err(StartError::Empty(stream.key().to_string()));
    }
    let micros = |s: f64| (s * 1e6) as u64;
    let pos = if let Some(at) = req.at {
        b.position_at_time(at)
    } else if let Some(off) = req.offset {
        b.position_back(micros(off))
    } else if let Some(p) = req.pump {
        b.position_back(micros(p))
    } else {
        b.position_back(u64::from(stream.config().burst_seconds) * 1_000_000)
    };
    let end = req.pump.map(|p| b.position_after(pos, micros(p)));
    let content_length = end.map(|e| b.bytes_between(pos, e));
    let lag = b.bytes_between(pos, b.live());
    let time = b.time_of(pos);
    Ok(Start {
        pos,
        end,
        content_length,
        lag,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(
            parse_time("2026-11-21T09:00:00Z").unwrap(),
            1_795_251_600_000_000
        );
        assert_eq!(
            parse_time("2026-11-21T10:00:00+01:00").unwrap(),
            1_795_251_600_000_000
        );
        assert_eq!(parse_time("1795251600.5").unwrap(), 1_795_251_600_500_000);
        assert!(matches!(
            parse_time("yesterday"),
            Err(StartError::BadTime(_))
        ));
        assert!(matches!(parse_time("-5"), Err(StartError::BadTime(_))));
        assert_eq!(
            crate::stream::format_time(1_795_251_600_000_000),
            "2026-11-21T09:00:00Z"
        );
    }

    fn req(q: &str) -> Request {
        let raw = format!("GET /s?{q} HTTP/1.1\r\n\r\n");
        crate::http::request::parse(raw.as_bytes(), 4096)
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(
            StartRequest::from_request(&req("offset=30"))
                .unwrap()
                .offset,
            Some(30.0)
        );
        assert_eq!(
            StartRequest::from_request(&req("from=30&pump=10"))
                .unwrap()
                .offset,
            Some(30.0)
        );
        assert_eq!(
            StartRequest::from_request(&req("offset=-1")).unwrap_err(),
            StartError::BadSeconds {
                param: "offset",
                value: "-1".into()
            }
        );
        assert!(StartRequest::from_request(&req("pump=abc")).is_err());
        assert!(StartRequest::from_request(&req("pump=0")).is_err());
        assert!(matches!(
            StartRequest::from_request(&req("at=4102444800")).unwrap_err(),
            StartError::FutureTime(_)
        ));
        let r = StartRequest::from_request(&req("at=2026-01-01T00:00:00Z")).unwrap();
        assert!(r.at.is_some() && r.is_positioned());
        assert!(!StartRequest::from_request(&req("x=1"))
            .unwrap()
            .is_positioned());
    }
}
