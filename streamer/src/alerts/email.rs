//! Email alerts (`alerts.email`): one message per raise and per clear, over
//! SMTP with STARTTLS (default), implicit TLS or none, with AUTH, through
//! lettre (a maintained SMTP client; our rustls with ring). Sent on the
//! delivery task, retried with backoff: never on the audio path.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use streammachine_config::{EmailConfig, SmtpTls};

use super::Event;
use crate::stream::{format_time, now_micros};

/// Why an email could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// An address does not parse.
    #[error("{field}: {value:?} is not an email address: {why}")]
    Address {
        /// `from` or `to`.
        field: &'static str,
        /// What was given.
        value: String,
        /// The parser's message.
        why: String,
    },
    /// The password file or CA file cannot be read.
    #[error("cannot read {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        why: String,
    },
    /// TLS could not be set up (a bad CA file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The message could not be built.
    #[error("message: {0}")]
    Message(String),
    /// The server refused or could not be reached.
    #[error("SMTP: {0}")]
    Smtp(String),
}

/// The SMTP transport and the addresses, ready to send.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailer({})", self.server)
    }
}

impl Mailer {
    /// Checks the addresses, reads the password and CA files, and builds the
    /// transport (it connects when it sends).
    pub fn new(cfg: &EmailConfig) -> Result<Mailer, EmailError> {
        let parse = |field: &'static str, v: &str| {
            v.parse::<Mailbox>().map_err(|e| EmailError::Address {
                field,
                value: v.to_string(),
                why: e.to_string(),
            })
        };
        let from = parse("from", &cfg.from)?;
        let to = (cfg.to.iter())
            .map(|t| parse("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| EmailError::File {
                path: p.display().to_string(),
                why: e.to_string(),
            })
        };
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => Some(p.0.clone()),
            (None, Some(f)) => Some(String::from_utf8_lossy(&read(f)?).trim().to_string()),
            (None, None) => None,
        };
        let mut params = TlsParameters::builder(cfg.server.clone());
        if let Some(ca) = &cfg.ca_file {
            let cert =
                Certificate::from_pem(&read(ca)?).map_err(|e| EmailError::Tls(e.to_string()))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| EmailError::Tls(e.to_string()))?;
        let (tls, port) = match cfg.tls {
            SmtpTls::Starttls => (Tls::Required(params), 587),
            SmtpTls::Tls => (Tls::Wrapper(params), 465),
            SmtpTls::None => (Tls::None, 25),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.server)
            .port(cfg.port.unwrap_or(port))
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let Some(user) = &cfg.username {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            server: cfg.server.clone(),
        })
    }

    /// Sends one message about `e`.
    pub async fn send(&self, e: &Event, mode: &str) -> Result<(), EmailError> {
        let (subject, body) = render(e, mode);
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            m = m.to(to.clone());
        }
        let message = m
            .body(body)
            .map_err(|e| EmailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| EmailError::Smtp(crate::error::error_chain(&e)))
    }
}

/// The subject and body of the message about `e`.
fn render(e: &Event, mode: &str) -> (String, String) {
    let (state, tag) = if e.active {
        ("raised", "ALERT")
    } else {
        ("cleared", "cleared")
    };
    let subject = format!("[StreamMachine] {tag} {}: {}", e.alert, e.subject);
    let body = format!(
        "{}\n\nalert:   {}\nsubject: {}\nstate:   {state}\ntime:    {}\nsource:  streammachine ({mode})\n",
        e.summary,
        e.alert,
        e.subject,
        format_time(now_micros()),
    );
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_say_what_and_about_what() {
        let e = Event {
            alert: "source_lost",
            subject: "main".into(),
            active: true,
            summary: "mount main has no source".into(),
        };
        let (s, b) = render(&e, "master");
        assert_eq!(s, "[StreamMachine] ALERT source_lost: main");
        assert!(b.starts_with("mount main has no source") && b.contains("state:   raised"));
        let (s, _) = render(&Event { active: false, ..e }, "master");
        assert_eq!(s, "[StreamMachine] cleared source_lost: main");
    }
}
