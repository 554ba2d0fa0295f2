//! Checks the API server's schema cannot make, turning a SourceMount and its
//! Streams into the streamer's config types. An invalid spec is an [`Invalid`]:
//! a `Ready=False` condition with its reason, not an error to retry.

use std::fmt;

use kube::ResourceExt;
use streammachine_crds::config::{
    Config, HlsConfig, SourceInputConfig, SourceMountConfig, StreamConfig, TranscodeConfig,
    RESERVED_STREAM_KEYS,
};
use streammachine_crds::v1alpha1::{SourceMount, Stream};

use crate::names;

/// Reason: the Stream names a SourceMount that does not exist.
pub const REASON_SOURCE_MOUNT_NOT_FOUND: &str = "SourceMountNotFound";
/// Reason: the spec asks for something the streamer cannot do.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason: the Stream's SourceMount exists but cannot be served.
pub const REASON_SOURCE_MOUNT_INVALID: &str = "SourceMountInvalid";
/// Reason: the object's name cannot be a mount or stream key.
pub const REASON_INVALID_NAME: &str = "InvalidName";

/// Why a spec cannot be served, for a `Ready=False` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The condition's reason (CamelCase).
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Invalid {
    /// An invalid spec with its reason and message.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The longest suffix a child's name adds to a SourceMount's (`-master`,
/// `-source`, `-config`).
const LONGEST_CHILD_SUFFIX: usize = 7;
/// The longest DNS label (a Service name, a label value).
const DNS_LABEL_MAX: usize = 63;

/// Whether `name` is a DNS label of lowercase letters, digits and `-`, ending
/// with a letter or digit and starting with a letter (DNS-1035, what a
/// Service name must be) or, when `digit_first`, also a digit (DNS-1123).
fn is_dns_label(name: &str, digit_first: bool) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || (digit_first && b[0].is_ascii_digit()))
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A SourceMount's name becomes its children's names (`<name>-master`, a
/// Service) and the streamer's mount key: a DNS-1035 label of at most 56
/// characters. The CRD cannot say so (the API server does not let a schema
/// constrain `metadata.name`), so it is checked here before anything is built.
pub fn check_mount_name(name: &str) -> Result<(), Invalid> {
    let max = DNS_LABEL_MAX - LONGEST_CHILD_SUFFIX;
    if !is_dns_label(name, false) || name.len() > max {
        return Err(Invalid::new(
            REASON_INVALID_NAME,
            format!(
                "SourceMount name {name:?} cannot name its Services: use at most {max} lowercase letters, digits and '-', starting with a letter (no '.')"
            ),
        ));
    }
    Ok(())
}

/// A Stream's name is its URL path (`/<name>`, `/<name>.m3u8`) and metric
/// label: a DNS-1123 label (no `.`, which would read as a file extension) of
/// at most 63 characters, and not a route of the streamer.
pub fn check_stream_name(name: &str) -> Result<(), Invalid> {
    if !is_dns_label(name, true) || name.len() > DNS_LABEL_MAX {
        return Err(Invalid::new(
            REASON_INVALID_NAME,
            format!(
                "Stream name {name:?} cannot be a stream path: use at most {DNS_LABEL_MAX} lowercase letters, digits and '-' (no '.')"
            ),
        ));
    }
    if RESERVED_STREAM_KEYS.contains(&name) {
        return Err(Invalid::new(
            REASON_INVALID_NAME,
            format!("Stream name {name:?} is reserved for a built-in route of the streamer"),
        ));
    }
    Ok(())
}

/// Where the pods find the key of signed listener URLs, if the SourceMount
/// names one (`spec.listeners.urlSecretKeyRef`).
pub fn url_secret_file(mount: &SourceMount) -> Option<std::path::PathBuf> {
    let listeners = mount.spec.listeners.as_ref()?;
    listeners
        .url_secret_key_ref
        .as_ref()
        .map(|_| format!("{}/{}", names::URL_SECRET_DIR, names::URL_SECRET_FILE).into())
}

/// The SourceMount as the streamer's mount config.
pub fn source_mount_config(mount: &SourceMount) -> Result<SourceMountConfig, Invalid> {
    let name = mount.name_any();
    check_mount_name(&name)?;
    Ok(SourceMountConfig {
        key: name,
        format: mount.spec.format.into(),
        password: None,
        password_file: Some(
            format!(
                "{}/{}",
                names::SOURCE_PASSWORD_DIR,
                names::SOURCE_PASSWORD_FILE
            )
            .into(),
        ),
        monitored: mount.spec.monitored,
        fallback: None,
        inputs: mount
            .spec
            .inputs
            .iter()
            .map(|i| SourceInputConfig {
                key: i.name.clone(),
                password: None,
                password_file: Some(format!("{}/{}", names::INPUTS_DIR, i.name).into()),
                priority: i.priority,
            })
            .collect(),
    })
}

/// The Stream as the streamer's stream config, checked against its SourceMount.
pub fn stream_config(
    stream: &Stream,
    mount: Option<&SourceMount>,
) -> Result<StreamConfig, Invalid> {
    let spec = &stream.spec;
    let name = stream.name_any();
    check_stream_name(&name)?;
    let Some(mount) = mount else {
        return Err(Invalid::new(
            REASON_SOURCE_MOUNT_NOT_FOUND,
            format!(
                "spec.sourceMount: no SourceMount {:?} in namespace {:?}",
                spec.source_mount,
                stream.namespace().unwrap_or_default()
            ),
        ));
    };
    let source_format = mount.spec.format;
    let transcode = match (spec.format, spec.bitrate) {
        (_, Some(bitrate)) => Some(TranscodeConfig {
            profile: spec.profile,
            ..TranscodeConfig::new(spec.format.unwrap_or(source_format).into(), bitrate)
        }),
        (_, None) if spec.profile.is_some() => {
            return Err(Invalid::new(
                REASON_INVALID_SPEC,
                "spec.profile: a profile is for a transcode: set spec.bitrate",
            ))
        }
        (Some(f), None) if f != source_format => {
            return Err(Invalid::new(
                REASON_INVALID_SPEC,
                format!(
                    "spec.format: {f} differs from the source mount's {source_format}, which is a transcode: set spec.bitrate"
                ),
            ))
        }
        _ => None,
    };
    let mut c = StreamConfig::new(name);
    c.source_mount = Some(mount.name_any());
    c.rewind_seconds = spec.rewind_seconds;
    c.burst_seconds = spec.burst_seconds;
    c.icy_meta_interval = spec.icy_meta_interval;
    if let Some(b) = spec.max_buffer_bytes {
        c.max_buffer_bytes = b;
    }
    c.max_listeners = spec.max_listeners;
    c.listener_auth = spec.listener_auth.as_ref().map(|a| Box::new(a.to_config()));
    c.signed_urls = spec.signed_urls;
    c.title.clone_from(&spec.title);
    c.name.clone_from(&spec.name);
    c.description.clone_from(&spec.description);
    c.genre.clone_from(&spec.genre);
    c.url.clone_from(&spec.url);
    c.hls = spec.hls.as_ref().map(|h| HlsConfig {
        segment_seconds: h.segment_seconds,
        group: h.group.clone(),
    });
    c.transcode = transcode;
    // Everything else the streamer checks (ranges, burst within rewind), on a
    // config holding just this stream, so the message names this stream's field.
    let alone = Config {
        source_mounts: vec![source_mount_config(mount)?],
        streams: vec![c.clone()],
        listeners: streammachine_crds::config::ListenersConfig {
            url_secret_file: url_secret_file(mount),
            ..Default::default()
        },
        ..Config::default()
    };
    if let Err(e) = alone.validate() {
        let message = e.to_string().replacen("streams[0].", "spec.", 1).replacen(
            "sourceMounts[0].",
            "SourceMount ",
            1,
        );
        return Err(Invalid::new(REASON_INVALID_SPEC, message));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use streammachine_crds::v1alpha1::Format;

    #[test]
    fn a_plain_stream_follows_its_mount() {
        let m = testdata::mount("main");
        let s = testdata::stream("hits", "main");
        let c = stream_config(&s, Some(&m)).unwrap();
        assert_eq!(c.key, "hits");
        assert_eq!(c.source_mount.as_deref(), Some("main"));
        assert_eq!(c.transcode, None);
        assert_eq!(c.rewind_seconds, 14_400);
    }

    #[test]
    fn missing_mount_is_its_own_reason() {
        let s = testdata::stream("hits", "nope");
        let e = stream_config(&s, None).unwrap_err();
        assert_eq!(e.reason, REASON_SOURCE_MOUNT_NOT_FOUND);
        assert!(e.message.contains("\"nope\""), "{e}");
    }

    #[test]
    fn a_format_change_needs_a_bitrate() {
        let m = testdata::mount("main");
        let mut s = testdata::stream("hits", "main");
        s.spec.format = Some(Format::Aac);
        let e = stream_config(&s, Some(&m)).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_SPEC);
        assert!(e.message.starts_with("spec.format: aac differs"), "{e}");
        s.spec.bitrate = Some(64);
        let c = stream_config(&s, Some(&m)).unwrap();
        let t = c.transcode.unwrap();
        assert_eq!((t.format.to_string(), t.bitrate), ("aac".to_string(), 64));
        s.spec.profile = Some(streammachine_crds::config::AacProfile::He);
        let t = stream_config(&s, Some(&m)).unwrap().transcode.unwrap();
        assert_eq!(t.profile, Some(streammachine_crds::config::AacProfile::He));
        s.spec.bitrate = None;
        s.spec.format = None;
        let e = stream_config(&s, Some(&m)).unwrap_err();
        assert!(e.message.contains("spec.profile"), "{}", e.message);
        s.spec.profile = None;
        s.spec.bitrate = Some(64);
        s.spec.format = Some(Format::Aac);
        // Same format with a bitrate is a transcode too.
        s.spec.format = Some(Format::Mp3);
        assert!(stream_config(&s, Some(&m)).unwrap().transcode.is_some());
    }

    #[test]
    fn streamer_checks_name_the_spec_field() {
        let m = testdata::mount("main");
        let mut s = testdata::stream("hits", "main");
        s.spec.rewind_seconds = 5;
        s.spec.burst_seconds = 10;
        let e = stream_config(&s, Some(&m)).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_SPEC);
        assert!(e.message.starts_with("spec.burstSeconds"), "{e}");
    }

    #[test]
    fn reserved_and_long_names() {
        let m = testdata::mount("main");
        let e = stream_config(&testdata::stream("metrics", "main"), Some(&m)).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_NAME);
        let long = "a".repeat(65);
        let e = stream_config(&testdata::stream(&long, "main"), Some(&m)).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_NAME);
        let e = source_mount_config(&testdata::mount(&long)).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_NAME);
    }

    #[test]
    fn names_must_fit_services_and_paths() {
        for bad in ["my.mount", "Main", "1main", "main-", "", &"a".repeat(57)] {
            let e = check_mount_name(bad).unwrap_err();
            assert_eq!(e.reason, REASON_INVALID_NAME, "{bad:?}");
        }
        check_mount_name(&"a".repeat(56)).unwrap();
        check_mount_name("main-2").unwrap();
        for bad in ["my.stream", "Hits", "hits_1", &"a".repeat(64)] {
            let e = check_stream_name(bad).unwrap_err();
            assert_eq!(e.reason, REASON_INVALID_NAME, "{bad:?}");
        }
        check_stream_name(&"a".repeat(63)).unwrap();
        check_stream_name("1live").unwrap();
        // The name is checked before the mount is looked for.
        let e = stream_config(&testdata::stream("my.stream", "nope"), None).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_NAME);
    }
}
