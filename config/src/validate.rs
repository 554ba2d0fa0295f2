//! Reading a config (YAML or JSON, errors naming the key's path) and the
//! checks the schema cannot express (keys, references between sections,
//! ranges that depend on each other).

use super::*;

impl Config {
    /// Parses a YAML or JSON document; errors name the offending key's path.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_path_prefix(&inner.to_string(), &path);
            ConfigError::Parse {
                path: if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                message,
            }
        })
    }

    /// Renders the document as YAML (what the operator writes into a ConfigMap).
    pub fn to_yaml_string(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(|e| ConfigError::invalid("(document)", e.to_string()))
    }

    /// The source mounts, including the implicit ones of streams without `sourceMount`.
    pub fn effective_mounts(&self) -> Vec<SourceMountConfig> {
        let mut mounts = self.source_mounts.clone();
        for s in &self.streams {
            if s.source_mount.is_none() {
                mounts.push(SourceMountConfig {
                    key: s.key.clone(),
                    format: s.format.unwrap_or_default(),
                    password: s.password.clone(),
                    password_file: s.password_file.clone(),
                    monitored: false,
                    fallback: None,
                    inputs: Vec::new(),
                });
            }
        }
        mounts
    }

    /// Source mount inputs: valid paths, taken by no mount, stream or other
    /// input; one password source each.
    fn validate_inputs(&self) -> Result<(), ConfigError> {
        let mounts = self.effective_mounts();
        let mut taken: BTreeSet<&str> = mounts.iter().map(|m| m.key.as_str()).collect();
        taken.extend(self.streams.iter().map(|s| s.key.as_str()));
        for (i, m) in self.source_mounts.iter().enumerate() {
            for (j, input) in m.inputs.iter().enumerate() {
                let path = format!("sourceMounts[{i}].inputs[{j}]");
                check_key(&format!("{path}.key"), &input.key)?;
                if RESERVED_STREAM_KEYS.contains(&input.key.as_str())
                    || !taken.insert(input.key.as_str())
                {
                    return Err(ConfigError::invalid(
                        format!("{path}.key"),
                        format!(
                            "{:?} is already a mount, stream, input or built-in route",
                            input.key
                        ),
                    ));
                }
                if input.password.is_some() && input.password_file.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{path}.password"),
                        "give password or passwordFile, not both",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks what the schema cannot: unique keys, references, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .link
            .as_ref()
            .and_then(|l| l.resync_grace_seconds)
            .is_some_and(|s| s > 300)
        {
            return Err(ConfigError::invalid(
                "link.resyncGraceSeconds",
                "at most 300",
            ));
        }
        let mut mount_keys = BTreeSet::new();
        for (i, m) in self.source_mounts.iter().enumerate() {
            let path = format!("sourceMounts[{i}]");
            check_key(&format!("{path}.key"), &m.key)?;
            if !mount_keys.insert(m.key.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}.key"),
                    format!("duplicate source mount key {:?}", m.key),
                ));
            }
            if m.password.is_some() && m.password_file.is_some() {
                return Err(ConfigError::invalid(
                    format!("{path}.password"),
                    "give password or passwordFile, not both",
                ));
            }
            if let Some(f) = &m.fallback {
                if f.file.is_some() == f.url.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{path}.fallback"),
                        "give file or url (one of them)",
                    ));
                }
                if f.url
                    .as_ref()
                    .is_some_and(|u| !u.starts_with("http://") && !u.starts_with("https://"))
                {
                    return Err(ConfigError::invalid(
                        format!("{path}.fallback.url"),
                        "only http:// and https:// URLs can be pulled",
                    ));
                }
                if f.url.as_ref().is_some_and(|u| {
                    let rest = u.split_once("://").map_or("", |(_, r)| r);
                    rest.split('/').next().unwrap_or("").contains('@')
                }) {
                    return Err(ConfigError::invalid(
                        format!("{path}.fallback.url"),
                        "credentials in the URL are not supported (they would be logged)",
                    ));
                }
                if f.ca_file.is_some() && !f.url.as_ref().is_some_and(|u| u.starts_with("https://"))
                {
                    return Err(ConfigError::invalid(
                        format!("{path}.fallback.caFile"),
                        "only for an https:// url",
                    ));
                }
            }
        }
        let mut stream_keys = BTreeSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let path = format!("streams[{i}]");
            check_key(&format!("{path}.key"), &s.key)?;
            if RESERVED_STREAM_KEYS.contains(&s.key.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}.key"),
                    format!("{:?} is reserved for a built-in route", s.key),
                ));
            }
            if !stream_keys.insert(s.key.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}.key"),
                    format!("duplicate stream key {:?}", s.key),
                ));
            }
            match &s.source_mount {
                Some(mount) => {
                    if !mount_keys.contains(mount.as_str()) {
                        return Err(ConfigError::invalid(
                            format!("{path}.sourceMount"),
                            format!("no source mount named {mount:?} in sourceMounts"),
                        ));
                    }
                    for (field, set) in [
                        ("format", s.format.is_some()),
                        ("password", s.password.is_some()),
                        ("passwordFile", s.password_file.is_some()),
                    ] {
                        if set {
                            return Err(ConfigError::invalid(
                                format!("{path}.{field}"),
                                format!(
                                    "not allowed with sourceMount: the mount {mount:?} sets it"
                                ),
                            ));
                        }
                    }
                }
                None => {
                    if mount_keys.contains(s.key.as_str()) {
                        return Err(ConfigError::invalid(
                            format!("{path}.key"),
                            format!(
                                "stream {:?} has no sourceMount, so it is its own mount, but a source mount of that name exists; set sourceMount: {:?}",
                                s.key, s.key
                            ),
                        ));
                    }
                    if s.password.is_some() && s.password_file.is_some() {
                        return Err(ConfigError::invalid(
                            format!("{path}.password"),
                            "give password or passwordFile, not both",
                        ));
                    }
                }
            }
            if s.rewind_seconds == 0 || s.rewind_seconds > 7 * 24 * 3600 {
                return Err(ConfigError::invalid(
                    format!("{path}.rewindSeconds"),
                    "must be between 1 and 604800 (7 days)",
                ));
            }
            if let Some(t) = &s.transcode {
                t.validate(&format!("{path}.transcode"))?;
            }
            if s.burst_seconds > s.rewind_seconds {
                return Err(ConfigError::invalid(
                    format!("{path}.burstSeconds"),
                    "must not exceed rewindSeconds",
                ));
            }
            if !(256..=1_048_576).contains(&s.icy_meta_interval) {
                return Err(ConfigError::invalid(
                    format!("{path}.icyMetaInterval"),
                    "must be between 256 and 1048576 bytes",
                ));
            }
            if s.max_buffer_bytes < 16 * 1024 {
                return Err(ConfigError::invalid(
                    format!("{path}.maxBufferBytes"),
                    "must be at least 16384",
                ));
            }
            if s.max_listeners == Some(0) {
                return Err(ConfigError::invalid(
                    format!("{path}.maxListeners"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            if let Some(Err((field, why))) = s.listener_auth.as_ref().map(|a| a.check()) {
                return Err(ConfigError::invalid(
                    format!("{path}.listenerAuth.{field}"),
                    why,
                ));
            }
            if let Some(h) = &s.hls {
                if !(1..=60).contains(&h.segment_seconds) {
                    return Err(ConfigError::invalid(
                        format!("{path}.hls.segmentSeconds"),
                        "must be between 1 and 60",
                    ));
                }
            }
        }
        self.validate_inputs()?;
        for (i, d) in self.listeners.deny.iter().enumerate() {
            if crate::parse_net(d).is_none() {
                return Err(ConfigError::invalid(
                    format!("listeners.deny[{i}]"),
                    format!("{d:?} is neither an IP address nor a network like 198.51.100.0/24"),
                ));
            }
        }
        let url_secret =
            self.listeners.url_secret.is_some() || self.listeners.url_secret_file.is_some();
        if let Some(i) = self.streams.iter().position(|s| s.signed_urls) {
            if !url_secret {
                return Err(ConfigError::invalid(
                    format!("streams[{i}].signedUrls"),
                    "needs the key to check signatures with: listeners.urlSecret, listeners.urlSecretFile or STREAMMACHINE_URL_SECRET",
                ));
            }
        }
        if self.listeners.max_listeners == Some(0) {
            return Err(ConfigError::invalid(
                "listeners.maxListeners",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        let ports = [
            ("listeners.port", self.listeners.port),
            ("sources.port", self.sources.port),
            ("admin.port", self.admin.port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if *pa != 0 && pa == pb {
                    return Err(ConfigError::invalid(
                        *b,
                        format!("port {pb} is already used by {a}"),
                    ));
                }
            }
        }
        for (path, secs) in [
            (
                "sources.headerTimeoutSeconds",
                self.sources.header_timeout_seconds,
            ),
            (
                "sources.firstFrameTimeoutSeconds",
                self.sources.first_frame_timeout_seconds,
            ),
            (
                "sources.dataTimeoutSeconds",
                self.sources.data_timeout_seconds,
            ),
        ] {
            if !(secs > 0.0 && secs <= 3600.0) {
                return Err(ConfigError::invalid(
                    path,
                    "must be more than 0 and at most 3600",
                ));
            }
        }
        if let Some(d) = &self.dumps {
            if d.interval_seconds < 10 {
                return Err(ConfigError::invalid(
                    "dumps.intervalSeconds",
                    "must be at least 10",
                ));
            }
        }
        if let Some(Err((field, why))) = (self.alerts.as_ref())
            .and_then(|a| a.email.as_ref())
            .map(|e| e.check())
        {
            return Err(ConfigError::invalid(format!("alerts.email.{field}"), why));
        }
        if let Some(a) = &self.analytics {
            if let Some(es) = &a.elasticsearch {
                if a.file.is_some() {
                    return Err(ConfigError::invalid(
                        "analytics.elasticsearch",
                        "give file or elasticsearch, not both",
                    ));
                }
                if let Err((field, why)) = es.check() {
                    return Err(ConfigError::invalid(
                        format!("analytics.elasticsearch.{field}"),
                        why,
                    ));
                }
            }
            if a.interval_seconds == 0 || a.session_idle_seconds == 0 {
                return Err(ConfigError::invalid(
                    "analytics.intervalSeconds",
                    "intervalSeconds and sessionIdleSeconds must be at least 1",
                ));
            }
        }
        if self.mode == Mode::Slave && (!self.streams.is_empty() || !self.source_mounts.is_empty())
        {
            return Err(ConfigError::invalid(
                "streams",
                "slave mode takes its streams and mounts from the master; leave them out",
            ));
        }
        if self.mode == Mode::Slave && self.master.as_ref().is_none_or(|m| m.url.is_empty()) {
            return Err(ConfigError::invalid(
                "master.url",
                "slave mode needs the master's URL",
            ));
        }
        Ok(())
    }
}

/// Keys become URL path segments and metric labels: keep them plain.
fn check_key(path: &str, key: &str) -> Result<(), ConfigError> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !key.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            path,
            format!(
                "{key:?} is not a valid key: use 1-64 of A-Z a-z 0-9 - _ . (not starting with .)"
            ),
        ))
    }
}

/// serde_yaml prefixes nested errors with its own (shorter) path, e.g.
/// `streams[0]: unknown field …`; ours is complete, so drop theirs. The
/// trailing " at line L column C" stays: it helps.
fn strip_path_prefix(msg: &str, path: &str) -> String {
    let msg = msg.trim();
    if let Some((prefix, rest)) = msg.split_once(": ") {
        if !prefix.is_empty() && !prefix.contains(' ') && path.starts_with(prefix) {
            return rest.to_string();
        }
    }
    msg.to_string()
}
