//! The small HTTP/1.x layer shared by the listener, source and admin ports.
//!
//! Listener connections live for hours and will be handed to a successor
//! process with their exact state (DESIGN.md §5), so the server owns its
//! sockets and writes its responses itself instead of going through a
//! framework that hides the connection.

pub mod request;
pub mod response;

pub use request::{read_request, Request, RequestError};
pub use response::Response;

/// Largest request head accepted from a listener or a source.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Reason phrase of the status codes the server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
