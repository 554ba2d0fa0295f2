//! Names, labels, ports and paths shared by the builders and the reconciler.

use std::collections::BTreeMap;

/// The one field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "streammachine-operator";

/// Listener port (slaves).
pub const LISTENER_PORT: i32 = 8000;
/// Icecast source port (master).
pub const SOURCE_PORT: i32 = 8001;
/// Admin port: slave link, admin API, `/metrics`, `/healthz`, `/readyz`.
pub const ADMIN_PORT: i32 = 8002;

/// The streamer container's name.
pub const CONTAINER: &str = "streammachine";
/// The streamer's binary, on the image's `PATH`.
pub const BINARY: &str = "streammachine";
/// UID and GID the streamer runs as.
pub const RUN_AS: i64 = 65532;

/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/streammachine";
/// The config file inside [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "/etc/streammachine/config.yaml";
/// ConfigMap key of the master's config.
pub const MASTER_CONFIG_KEY: &str = "master.yaml";
/// ConfigMap key of the slaves' config.
pub const SLAVE_CONFIG_KEY: &str = "slave.yaml";
/// Where the link Secret is mounted.
pub const LINK_DIR: &str = "/var/run/secrets/streammachine/link";
/// Link Secret key of the master↔slave shared secret.
pub const LINK_SECRET_KEY: &str = "link-secret";
/// Link Secret key of the admin API token.
pub const ADMIN_TOKEN_KEY: &str = "admin-token";
/// Where the source password Secret is mounted.
pub const SOURCE_PASSWORD_DIR: &str = "/var/run/secrets/streammachine/source";
/// The source password file inside [`SOURCE_PASSWORD_DIR`].
pub const SOURCE_PASSWORD_FILE: &str = "password";
/// Where the master finds the passwords of the SourceMount's inputs (one
/// file per input, named like it).
pub const INPUTS_DIR: &str = "/var/run/secrets/streammachine/inputs";
/// Where master and slaves find the key of signed listener URLs.
pub const URL_SECRET_DIR: &str = "/var/run/secrets/streammachine/url";
/// The URL key's file inside [`URL_SECRET_DIR`].
pub const URL_SECRET_FILE: &str = "secret";
/// The master's dump directory.
pub const DUMPS_DIR: &str = "/var/lib/streammachine/dumps";
/// The handoff directory inside a slave container (`handoff: Socket`).
pub const HANDOFF_DIR: &str = "/var/run/streammachine/handoff";
/// The handoff socket: the newest slave pod on a node listens on it, the
/// one being replaced hands its listeners to it.
pub const HANDOFF_SOCKET: &str = "/var/run/streammachine/handoff/handoff.sock";
/// How long an old Socket-mode slave's preStop hook waits for its successor
/// to listen on the handoff socket before it drains instead.
pub const HANDOFF_WAIT_SECONDS: i64 = 15;
/// The streamer's control socket (`STREAMMACHINE_CONTROL_SOCKET`), where the
/// preStop hook's `streammachine handoff` reaches the server; per pod, on `/tmp`.
pub const CONTROL_SOCKET: &str = "/tmp/streammachine-control.sock";
/// Parent of the per-SourceMount handoff directories on the node.
pub const HOST_HANDOFF_ROOT: &str = "/var/run/streammachine";

/// `app.kubernetes.io/name` of everything the operator creates.
pub const APP_NAME: &str = "streammachine";
/// Label selecting what the operator manages (its watches use it).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=streammachine-operator";

/// Master or slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The master.
    Master,
    /// The slaves.
    Slave,
    /// Shared by both (ConfigMap, link Secret).
    Shared,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Master => "master",
            Component::Slave => "slave",
            Component::Shared => "config",
        }
    }
}

/// Deployment and Service of the master.
pub fn master(mount: &str) -> String {
    format!("{mount}-master")
}

/// Workload, Service and PodDisruptionBudget of the slaves.
pub fn slave(mount: &str) -> String {
    format!("{mount}-slave")
}

/// The ConfigMap with both configs.
pub fn config_map(mount: &str) -> String {
    format!("{mount}-config")
}

/// The link Secret (link secret and admin token).
pub fn link_secret(mount: &str) -> String {
    format!("{mount}-link")
}

/// The Service exposing only the source port outside the cluster.
pub fn source_service(mount: &str) -> String {
    format!("{mount}-source")
}

/// The master's admin URL, as slaves and the operator reach it.
pub fn master_url(mount: &str, namespace: &str) -> String {
    format!("http://{}.{namespace}.svc:{ADMIN_PORT}", master(mount))
}

/// The node directory holding one SourceMount's handoff socket.
pub fn host_handoff_dir(mount: &str, namespace: &str) -> String {
    format!("{HOST_HANDOFF_ROOT}/{namespace}/{mount}")
}

/// The recommended labels (`app.kubernetes.io/*`).
pub fn labels(
    mount: &str,
    component: Component,
    version: Option<&str>,
) -> BTreeMap<String, String> {
    let mut l = selector(mount, component);
    l.insert("app.kubernetes.io/part-of".into(), APP_NAME.into());
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    if let Some(v) = version {
        l.insert("app.kubernetes.io/version".into(), v.into());
    }
    l
}

/// The labels a workload's selector matches (a subset of [`labels`] that never changes).
pub fn selector(mount: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), mount.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// The tag of an image reference, as a label value (`None` for a digest or no tag).
pub fn image_version(image: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let (_, tag) = last.split_once(':')?;
    let ok = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| tag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_versions() {
        assert_eq!(
            image_version("streammachine:1.2.3").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(
            image_version("registry:5000/sm/streammachine:v1").as_deref(),
            Some("v1")
        );
        assert_eq!(image_version("registry:5000/sm/streammachine"), None);
        assert_eq!(image_version("sm@sha256:abcd"), None);
    }
}
