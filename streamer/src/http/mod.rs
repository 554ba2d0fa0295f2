//! The small HTTP/1.x layer shared by the listener, source and admin ports.
//!
//! Listener connections live for hours and will be handed to a successor
//! process with their exact state (DESIGN.md §5), so the server owns its
//! sockets and writes its responses itself instead of going through a
//! framework that hides the connection.

pub mod client;
pub mod pipe;
pub mod request;
pub mod response;
pub mod write_deadline;

pub use request::{read_request, Request, RequestError};
pub use response::Response;
pub use write_deadline::WriteDeadline;

/// Largest request head accepted from a listener or a source.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Reason phrase of the status codes the server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_status_the_server_answers_has_its_reason() {
        for status in [
            100, 101, 200, 201, 204, 400, 401, 404, 405, 408, 409, 411, 413, 415, 416, 422, 429,
            431, 500, 503,
        ] {
            assert_ne!(super::reason(status), "Unknown", "{status}");
        }
    }
}
