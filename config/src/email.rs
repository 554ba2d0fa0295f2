//! Email alerts' settings (`alerts.email`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// An SMTP server and who gets alert emails: one message per raise and per
/// clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its TLS certificate).
    pub server: String,
    /// Its port (default: 587 with `starttls`, 465 with `tls`, 25 with `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starttls` (default: required, never sent in the clear), `tls`
    /// (implicit TLS) or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user to log in as (AUTH), if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (prefer `passwordFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `StreamMachine <alerts@radio.example>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// A PEM file of certificates to trust besides the public roots (a
    /// private CA, a self-signed server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption (a relay on the same host).
    None,
}

impl EmailConfig {
    /// Checks what the schema cannot; `Err((field, why))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.server.trim().is_empty() {
            return Err(("server", "must name the SMTP server".into()));
        }
        if self.to.is_empty() {
            return Err(("to", "must list at least one recipient".into()));
        }
        for (field, a) in
            std::iter::once(("from", &self.from)).chain(self.to.iter().map(|t| ("to", t)))
        {
            if !a.contains('@') {
                return Err((field, format!("{a:?} is not an email address")));
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(("password", "give password or passwordFile, not both".into()));
        }
        Ok(())
    }
}
