//! Icecast's URL listener authentication (`listenerAuth` on a stream): the
//! server asks a web service of the station's (a paywall, a subscriber
//! database) before a listener may listen, and tells it when they leave,
//! with the same form fields and headers as Icecast 2.4's
//! `<authentication type="url">`, so existing auth scripts work unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stream's listener authentication webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerAuthConfig {
    /// Called (`POST`, form-encoded `action=listener_add&server=&port=&client=
    /// &mount=&user=&pass=&ip=&agent=`) before a listener gets audio, an HLS
    /// session its first playlist or segment; the listener is let in when the
    /// response carries `authHeader`. `http://` or `https://`.
    pub listener_add: String,
    /// Called (`action=listener_remove&…&duration=<s>`) when a listener that
    /// was let in leaves (an HLS session: when it stops fetching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_remove: Option<String>,
    /// How long a call may take (default 5 s); longer counts as unreachable.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// What a listener gets while the service is unreachable, times out or
    /// answers with a server error: `deny` (default, as Icecast: a paywall
    /// stays shut) or `allow` (the station prefers listeners to checks).
    #[serde(default)]
    pub when_unreachable: WhenUnreachable,
    /// The response header (name and value) that lets a listener in
    /// (default `icecast-auth-user: 1`).
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// The response header whose value is how many seconds the listener may
    /// stay (default `icecast-auth-timelimit`).
    #[serde(default = "default_timelimit_header")]
    pub timelimit_header: String,
    /// Request headers of the listener passed on to the service (each as a
    /// form field `headerPrefix` + name), e.g. `[Referer, Cookie]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Prefix of the forwarded headers' form fields (default `ClientHeader.`).
    #[serde(default = "default_header_prefix")]
    pub header_prefix: String,
}

/// What a listener gets while the auth service is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WhenUnreachable {
    /// Refused with `503` and `Retry-After` (fail closed).
    #[default]
    Deny,
    /// Let in (fail open).
    Allow,
}

fn default_timeout() -> f64 {
    5.0
}
fn default_auth_header() -> String {
    "icecast-auth-user: 1".into()
}
fn default_timelimit_header() -> String {
    "icecast-auth-timelimit".into()
}
fn default_header_prefix() -> String {
    "ClientHeader.".into()
}

impl ListenerAuthConfig {
    /// Webhooks calling `listener_add` with every other setting at its default.
    pub fn new(listener_add: String) -> Self {
        ListenerAuthConfig {
            listener_add,
            listener_remove: None,
            timeout_seconds: default_timeout(),
            when_unreachable: WhenUnreachable::Deny,
            auth_header: default_auth_header(),
            timelimit_header: default_timelimit_header(),
            headers: Vec::new(),
            header_prefix: default_header_prefix(),
        }
    }

    /// Checks the settings; `Err((field, why))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let url_ok = |u: &str| {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        };
        if !url_ok(&self.listener_add) {
            return Err(("listenerAdd", "must be an http:// or https:// URL".into()));
        }
        if let Some(u) = &self.listener_remove {
            if !url_ok(u) {
                return Err((
                    "listenerRemove",
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
        if !(0.05..=60.0).contains(&self.timeout_seconds) {
            return Err(("timeoutSeconds", "must be between 0.05 and 60".into()));
        }
        match self.auth_header.split_once(':') {
            Some((name, _)) if !name.trim().is_empty() => {}
            _ => {
                return Err((
                    "authHeader",
                    "must be a header and its value, like \"icecast-auth-user: 1\"".into(),
                ))
            }
        }
        if self
            .timelimit_header
            .trim()
            .trim_end_matches(':')
            .is_empty()
        {
            return Err(("timelimitHeader", "must name a header".into()));
        }
        Ok(())
    }

    /// Hides credentials in the webhook URLs (`https://user:pass@…`).
    pub fn redact(&mut self) {
        self.listener_add = crate::redact_url(&self.listener_add);
        if let Some(u) = &mut self.listener_remove {
            *u = crate::redact_url(u);
        }
    }

    /// The auth header's name (lower case) and value.
    pub fn auth_header_parts(&self) -> (String, String) {
        let (n, v) = self
            .auth_header
            .split_once(':')
            .unwrap_or((&self.auth_header, ""));
        (n.trim().to_ascii_lowercase(), v.trim().to_string())
    }

    /// The time-limit header's name (lower case).
    pub fn timelimit_header_name(&self) -> String {
        self.timelimit_header
            .trim()
            .trim_end_matches(':')
            .trim()
            .to_ascii_lowercase()
    }
}
