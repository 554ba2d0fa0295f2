//! What every streamer pod shares: the container, volumes, probes, ports,
//! the security defaults.

use super::*;

pub(super) fn streamer_container(
    ctx: &Ctx<'_>,
    component: Component,
    extra_args: Vec<&str>,
) -> Container {
    let mut args = vec![
        "--config".to_string(),
        names::CONFIG_FILE.to_string(),
        "--log-format".to_string(),
        "json".to_string(),
    ];
    args.extend(extra_args.into_iter().map(String::from));
    Container {
        name: names::CONTAINER.into(),
        image: Some(ctx.image(component)),
        image_pull_policy: ctx.mount.spec.image_pull_policy.map(|p| p.as_str().into()),
        command: Some(vec![names::BINARY.into()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn pod_defaults() -> PodSpec {
    PodSpec {
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(names::RUN_AS),
            run_as_group: Some(names::RUN_AS),
            fs_group: Some(names::RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn pod_template(ctx: &Ctx<'_>, component: Component, spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(ctx.labels(component)),
            annotations: Some(BTreeMap::from([
                ("prometheus.io/scrape".to_string(), "true".to_string()),
                (
                    "prometheus.io/port".to_string(),
                    names::ADMIN_PORT.to_string(),
                ),
                ("prometheus.io/path".to_string(), "/metrics".to_string()),
            ])),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

/// Config (one key of the ConfigMap, as `config.yaml`), link Secret, `/tmp`.
pub(super) fn common_volumes(ctx: &Ctx<'_>, config_key: &str) -> Vec<Volume> {
    [
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&ctx.name),
                items: Some(vec![KeyToPath {
                    key: config_key.into(),
                    path: "config.yaml".into(),
                    mode: None,
                }]),
                default_mode: None,
                optional: Some(false),
            }),
            ..Default::default()
        },
        Volume {
            name: "link".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::link_secret(&ctx.name)),
                items: None,
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ]
    .into_iter()
    .chain(url_secret(ctx).map(|k| secret_key_volume("url-secret", k, names::URL_SECRET_FILE)))
    .collect()
}

pub(super) fn common_mounts(ctx: &Ctx<'_>) -> Vec<VolumeMount> {
    let mut mounts = vec![
        volume_mount("config", names::CONFIG_DIR, true),
        volume_mount("link", names::LINK_DIR, true),
        volume_mount("tmp", "/tmp", false),
    ];
    if url_secret(ctx).is_some() {
        mounts.push(volume_mount("url-secret", names::URL_SECRET_DIR, true));
    }
    mounts
}

/// The Secret key of signed listener URLs, if the SourceMount names one.
fn url_secret<'a>(ctx: &Ctx<'a>) -> Option<&'a SecretKeySelector> {
    ctx.mount
        .spec
        .listeners
        .as_ref()?
        .url_secret_key_ref
        .as_ref()
}

/// A volume holding one key of a Secret as `path`.
pub(super) fn secret_key_volume(name: &str, key: &SecretKeySelector, path: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(key.name.clone()),
            items: Some(vec![KeyToPath {
                key: key.key.clone(),
                path: path.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

pub(super) fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

pub(super) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(super) fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(super) fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

pub(super) fn non_empty(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}
