//! Icecast 2.4's admin interface, on the admin port: `/admin/stats`,
//! `/admin/listmounts`, `/admin/listclients`, `/admin/killclient`,
//! `/admin/moveclients` and `/admin/killsource`, with XML shaped exactly like
//! Icecast's (element names, order, `<iceresponse>` replies, its HTML 400s),
//! for the tools built on it (AzuraCast, Centova Cast, exporters, scripts).
//!
//! Authentication is Icecast's HTTP Basic: user `admin`, and the admin token
//! (`admin.token`, `admin.tokenFile`, `STREAMMACHINE_ADMIN_TOKEN`) as the
//! password; the bearer token works too. Icecast's `fallbacks` and
//! `metadata` answer 501 and say what to use instead.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::icestats::{host_name, http_date, sources, SourceFacts};
use super::StatusHost;
use crate::http::Response;
use crate::metrics::counter_sum;

/// Icecast's admin user name.
pub const ADMIN_USER: &str = "admin";

/// Checks Icecast-style credentials: Basic `admin:<token>`, or the bearer
/// token. `Err` is the failure's metric label and the 401 to send.
pub fn authorize(
    token: Option<&streammachine_config::Secret>,
    authorization: Option<&str>,
) -> Result<(), (&'static str, Response)> {
    let refuse = |why: &'static str| {
        (
            why,
            Response::new(401, "Authentication Required")
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("WWW-Authenticate", "Basic realm=\"Icecast2 Server\"")
                .body(b"You need to authenticate\r\n".to_vec()),
        )
    };
    let Some(expected) = token else {
        return Err(refuse("disabled"));
    };
    let Some((scheme, value)) = authorization.and_then(|a| a.split_once(' ')) else {
        return Err(refuse("no_credentials"));
    };
    let given = if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .unwrap_or_default();
        match String::from_utf8_lossy(&decoded).split_once(':') {
            Some((user, pass)) if user == ADMIN_USER => pass.to_string(),
            _ => return Err(refuse("wrong_user")),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        value.trim().to_string()
    } else {
        return Err(refuse("no_credentials"));
    };
    if crate::source::mount::constant_time_eq(given.as_bytes(), expected.0.as_bytes()) {
        Ok(())
    } else {
        Err(refuse("wrong_token"))
    }
}

/// Answers `/admin/<command>` (after [`authorize`]) with the query's
/// parameters.
pub fn handle(
    server: &dyn StatusHost,
    command: &str,
    query: &[(String, String)],
    host: Option<&str>,
) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match command {
        "stats" | "stats.xml" => xml(stats(server, host)),
        "listmounts" => xml(listmounts(server, host)),
        "listclients" => listclients(server, param("mount")),
        "killclient" => killclient(server, param("mount"), param("id")),
        "killsource" => killsource(server, param("mount")),
        "metadata" => not_built(
            "metadata",
            "send it to the source port (GET /admin/metadata with the mount's source password) or POST /api/streams/{key}/metadata",
        ),
        "moveclients" => moveclients(server, param("mount"), param("destination")),
        "fallbacks" => not_built(
            command,
            "a source mount's fallback is set in its configuration (fallback.file or fallback.url)",
        ),
        _ => error_page(400, "Unrecognised command"),
    }
}

/// The stream a `mount` parameter names (`/<stream>`).
fn stream_of(
    server: &dyn StatusHost,
    mount: Option<&str>,
) -> Result<std::sync::Arc<crate::stream::Stream>, Response> {
    let Some(path) = mount else {
        return Err(error_page(400, "Missing parameter"));
    };
    let key = path.trim_start_matches('/');
    server
        .streams()
        .into_iter()
        .find(|s| s.key() == key)
        .ok_or_else(|| error_page(400, "Source does not exist"))
}

/// `/admin/listclients?mount=/<stream>`: each listener's address,
/// User-Agent, seconds connected and id (raw, ICY and pump listeners; HLS
/// has sessions, not connections).
fn listclients(server: &dyn StatusHost, mount: Option<&str>) -> Response {
    let stream = match stream_of(server, mount) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = SystemTime::now();
    let list = stream.listener_list();
    let mut out = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    let _ = write!(out, "<source mount=\"/{}\">", escape(stream.key()));
    element(&mut out, "Listeners", list.len());
    for l in &list {
        out.push_str("<listener>");
        element(&mut out, "IP", l.ip);
        element(&mut out, "UserAgent", l.user_agent.as_deref().unwrap_or(""));
        element(&mut out, "Connected", secs_since(now, l.connected_at));
        element(&mut out, "ID", l.id);
        out.push_str("</listener>");
    }
    out.push_str("</source></icestats>\n");
    xml(out)
}

/// `/admin/moveclients?mount=/<a>&destination=/<b>`: every raw and ICY
/// listener of `a` goes on in `b` at the same wall-clock position (at its
/// next chunk boundary), as Icecast moves listeners between mounts; both
/// must be of one format (a player cannot switch codec mid-stream).
fn moveclients(
    server: &dyn StatusHost,
    mount: Option<&str>,
    destination: Option<&str>,
) -> Response {
    let from = match stream_of(server, mount) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(to) = stream_of(server, destination) else {
        return error_page(400, "No such destination");
    };
    if std::sync::Arc::ptr_eq(&from, &to) {
        return error_page(400, "supplied mountpoints are identical");
    }
    if from.format() != to.format() {
        return error_page(400, "the destination is of another format");
    }
    let n = from.move_listeners(&to);
    tracing::info!(from = %from.key(), to = %to.key(), listeners = n, "listeners moved through /admin/moveclients");
    iceresponse(
        &format!("Clients moved from /{} to /{}", from.key(), to.key()),
        true,
    )
}

/// `/admin/killclient?mount=/<stream>&id=N`.
fn killclient(server: &dyn StatusHost, mount: Option<&str>, id: Option<&str>) -> Response {
    let stream = match stream_of(server, mount) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(id) = id.and_then(|i| i.trim().parse::<u64>().ok()) else {
        return error_page(400, "Missing parameter");
    };
    if stream.kick_listener(id) {
        tracing::info!(stream = %stream.key(), id, "listener disconnected through /admin/killclient");
        iceresponse(&format!("Client {id} removed"), true)
    } else {
        iceresponse(&format!("Client {id} not found"), false)
    }
}

fn xml(body: String) -> Response {
    Response::new(200, "OK")
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("Cache-Control", "no-cache, no-store")
        .body(body.into_bytes())
}

/// Icecast's HTML error page.
fn error_page(status: u16, message: &str) -> Response {
    Response::new(status, crate::http::reason(status))
        .header("Content-Type", "text/html; charset=utf-8")
        .body(
            format!(
                "<html><head><title>Error {status}</title></head><body><b>{status} - {}</b></body></html>\r\n",
                escape(message)
            )
            .into_bytes(),
        )
}

fn not_built(command: &str, instead: &str) -> Response {
    error_page(
        501,
        &format!("/admin/{command} is not implemented in StreamMachine yet: {instead}"),
    )
}

/// `<iceresponse>`, Icecast's reply to a command.
fn iceresponse(message: &str, ok: bool) -> Response {
    xml(format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{}</return></iceresponse>\n",
        escape(message),
        u8::from(ok)
    ))
}

/// XML text: `& < > " '` escaped, control characters (invalid in XML 1.0) dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(&value.to_string()));
}

/// `/admin/stats`: the server's counters, then every source with what
/// `status-json.xsl` has and Icecast's admin-only fields.
pub fn stats(server: &dyn StatusHost, host: Option<&str>) -> String {
    let list = sources(server, host);
    let m = server.metrics();
    let listener_connections = counter_sum(&m.listener_connections, None);
    let source_connections = counter_sum(&m.source_connections, None);
    let listeners: usize = server.streams().iter().map(|s| s.listener_count()).sum();
    let connected_sources: usize = list.iter().filter(|s| s.source_ip.is_some()).count();
    let (start, start_iso) = http_date(server.started_at());
    let mut out = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    element(&mut out, "admin", "icemaster@localhost");
    element(
        &mut out,
        "client_connections",
        listener_connections + source_connections,
    );
    element(&mut out, "clients", listeners + connected_sources);
    element(
        &mut out,
        "connections",
        listener_connections + source_connections,
    );
    element(&mut out, "file_connections", 0);
    element(&mut out, "host", host_name(host));
    element(&mut out, "listener_connections", listener_connections);
    element(&mut out, "listeners", listeners);
    element(&mut out, "location", "Earth");
    element(
        &mut out,
        "server_id",
        format!("StreamMachine {}", env!("CARGO_PKG_VERSION")),
    );
    element(&mut out, "server_start", start);
    element(&mut out, "server_start_iso8601", start_iso);
    element(&mut out, "source_client_connections", source_connections);
    element(&mut out, "source_relay_connections", 0);
    element(&mut out, "source_total_connections", source_connections);
    element(&mut out, "sources", list.len());
    element(&mut out, "stats", 0);
    element(&mut out, "stats_connections", 0);
    for s in &list {
        source_stats(&mut out, s);
    }
    out.push_str("</icestats>\n");
    out
}

fn source_stats(out: &mut String, s: &SourceFacts) {
    let _ = write!(out, "<source mount=\"{}\">", escape(&s.mount));
    if let Some(a) = &s.audio_info {
        element(out, "audio_info", a);
    }
    if let Some(b) = s.bitrate {
        element(out, "bitrate", b);
    }
    if let Some(c) = s.channels {
        element(out, "channels", c);
    }
    element(out, "genre", &s.genre);
    element(out, "listener_peak", s.listener_peak);
    element(out, "listeners", s.listeners);
    element(out, "listenurl", &s.listenurl);
    element(out, "max_listeners", "unlimited");
    element(out, "public", s.public);
    if let Some(r) = s.samplerate {
        element(out, "samplerate", r);
    }
    element(out, "server_description", &s.server_description);
    element(out, "server_name", &s.server_name);
    element(out, "server_type", s.server_type);
    if let Some(u) = &s.server_url {
        element(out, "server_url", u);
    }
    element(out, "slow_listeners", 0);
    element(out, "source_ip", s.source_ip.as_deref().unwrap_or(""));
    let (start, start_iso) = http_date(s.stream_start);
    element(out, "stream_start", start);
    element(out, "stream_start_iso8601", start_iso);
    if !s.title.is_empty() {
        element(out, "title", &s.title);
    }
    element(out, "total_bytes_read", s.total_bytes_read);
    element(out, "total_bytes_sent", s.total_bytes_sent);
    element(out, "user_agent", s.user_agent.as_deref().unwrap_or(""));
    out.push_str("</source>");
}

/// `/admin/listmounts`: each source's fallback, listeners, seconds
/// connected and content type.
pub fn listmounts(server: &dyn StatusHost, host: Option<&str>) -> String {
    let now = SystemTime::now();
    let mut out = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    for s in sources(server, host) {
        let _ = write!(out, "<source mount=\"{}\">", escape(&s.mount));
        element(&mut out, "fallback", "");
        element(&mut out, "listeners", s.listeners);
        element(&mut out, "Connected", secs_since(now, s.stream_start));
        element(&mut out, "content-type", s.server_type);
        out.push_str("</source>");
    }
    out.push_str("</icestats>\n");
    out
}

/// Whole seconds from `then` to `now` (0 if `then` is later).
fn secs_since(now: SystemTime, then: SystemTime) -> u64 {
    now.duration_since(then).map_or(0, |d| d.as_secs())
}

/// `/admin/killsource?mount=/<stream>`: disconnects the source on air on
/// that stream's mount (a waiting source takes over, as when it leaves).
fn killsource(server: &dyn StatusHost, mount: Option<&str>) -> Response {
    let stream = match stream_of(server, mount) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let key = stream.key();
    let Some(mount) = server.mount(stream.config().mount_key()) else {
        return error_page(400, "Source does not exist");
    };
    let Some(id) = mount.active_source() else {
        return error_page(400, "Source does not exist");
    };
    match mount.drop_source(id) {
        Ok(()) => {
            tracing::info!(mount = %key, "source killed through /admin/killsource");
            iceresponse("Source Removed", true)
        }
        Err(e) => iceresponse(&e.to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn basic_admin_with_the_token_or_the_bearer_token() {
        let token = streammachine_config::Secret("s3cret".into());
        assert!(authorize(Some(&token), Some(&basic("admin", "s3cret"))).is_ok());
        assert!(authorize(Some(&token), Some("Bearer s3cret")).is_ok());
        let (why, r) = authorize(Some(&token), Some(&basic("admin", "nope"))).unwrap_err();
        let (status, headers, _) = r.into_parts();
        assert_eq!((why, status), ("wrong_token", 401));
        assert!(headers
            .iter()
            .any(|(k, v)| *k == "WWW-Authenticate" && v.contains("Basic")));
        assert_eq!(
            authorize(Some(&token), Some(&basic("root", "s3cret")))
                .unwrap_err()
                .0,
            "wrong_user"
        );
        assert_eq!(
            authorize(Some(&token), None).unwrap_err().0,
            "no_credentials"
        );
        assert_eq!(
            authorize(None, Some(&basic("admin", ""))).unwrap_err().0,
            "disabled"
        );
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            escape("a<b & \"c\"\u{1}'"),
            "a&lt;b &amp; &quot;c&quot;&apos;"
        );
        let mut out = String::new();
        element(&mut out, "title", "Rock & Roll");
        assert_eq!(out, "<title>Rock &amp; Roll</title>");
    }
}
