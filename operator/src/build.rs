//! Pure builders: a SourceMount and its (validated) Streams in, the desired
//! child objects out. No client, no clock; the only input from outside is the
//! existing link Secret (its values are kept) and a generator for new ones.
//!
//! The streamer's config lives in a ConfigMap that the pods mount as a
//! directory (not `subPath`), so a config-only change (a Stream added, a title
//! changed) updates the file in place and leaves the pod templates untouched:
//! no rollout, no dropped listener. Only workload settings (image, resources,
//! replicas, handoff mode) change a pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, HostPathVolumeSource, KeyToPath, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use streammachine_crds::config::{
    AdminConfig, Config, ConfigError, DumpsConfig, LinkConfig, MasterConfig, Mode, StreamConfig,
};
use streammachine_crds::v1alpha1::{Handoff, ServiceType, SourceMount};

use crate::names::{self, Component};
use crate::validate::{self, Invalid};

/// Operator-wide settings the builders need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Image for SourceMounts that do not name one.
    pub default_image: String,
}

/// Why the children could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The SourceMount has no namespace or uid (it was not read from the API).
    #[error("SourceMount has no {0}: it must come from the API server")]
    Metadata(&'static str),
    /// The SourceMount's spec cannot be served.
    #[error("{0}")]
    Invalid(Invalid),
    /// The config could not be rendered.
    #[error("rendering the streamer config: {0}")]
    Config(#[from] ConfigError),
}

/// The slave workload: a Deployment (`handoff: Drain`) or a DaemonSet (`Socket`).
#[derive(Debug, Clone, PartialEq)]
pub enum SlaveWorkload {
    /// `handoff: Drain`.
    Deployment(Box<Deployment>),
    /// `handoff: Socket`.
    DaemonSet(Box<DaemonSet>),
}

/// The kinds of child the operator may have to delete when the spec changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleKind {
    /// A Deployment.
    Deployment,
    /// A DaemonSet.
    DaemonSet,
    /// A Service.
    Service,
    /// A PodDisruptionBudget.
    PodDisruptionBudget,
}

/// Everything one SourceMount owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// `master.yaml` and `slave.yaml`.
    pub config_map: ConfigMap,
    /// Link secret and admin token.
    pub link_secret: Secret,
    /// The master (1 replica, `Recreate`).
    pub master_deployment: Deployment,
    /// The master's in-cluster Service: source and admin/link ports.
    pub master_service: Service,
    /// With `master.serviceType` other than ClusterIP: the source port alone,
    /// of that type (the admin port stays inside the cluster).
    pub source_service: Option<Service>,
    /// The slaves.
    pub slaves: SlaveWorkload,
    /// Where listeners connect.
    pub slave_service: Service,
    /// For `handoff: Drain` (a DaemonSet has no scale subresource for a budget).
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

impl Children {
    /// Children that must not exist for this spec (left over from an earlier one).
    pub fn stale(&self, mount: &str) -> Vec<(StaleKind, String)> {
        let mut out = Vec::new();
        match self.slaves {
            SlaveWorkload::Deployment(_) => out.push((StaleKind::DaemonSet, names::slave(mount))),
            SlaveWorkload::DaemonSet(_) => out.push((StaleKind::Deployment, names::slave(mount))),
        }
        if self.pod_disruption_budget.is_none() {
            out.push((StaleKind::PodDisruptionBudget, names::slave(mount)));
        }
        if self.source_service.is_none() {
            out.push((StaleKind::Service, names::source_service(mount)));
        }
        out
    }
}

/// The streamer image `mount` asks for: its own, or the operator's default.
pub fn image(mount: &SourceMount, settings: &Settings) -> String {
    mount
        .spec
        .image
        .clone()
        .unwrap_or_else(|| settings.default_image.clone())
}

/// What every builder needs about the SourceMount.
struct Ctx<'a> {
    mount: &'a SourceMount,
    name: String,
    namespace: String,
    owner: OwnerReference,
    image: String,
    version: Option<String>,
    /// The slaves' image: the mount's, or the one they keep until the
    /// master runs the new one (see [`crate::rollout`]).
    slave_image: String,
    slave_version: Option<String>,
}

impl<'a> Ctx<'a> {
    fn new(
        mount: &'a SourceMount,
        settings: &Settings,
        slave_image: Option<String>,
    ) -> Result<Self, BuildError> {
        let namespace = mount.namespace().ok_or(BuildError::Metadata("namespace"))?;
        // blockOwnerDeletion: a foreground delete of the SourceMount waits
        // for its children (and `kubectl delete --cascade=foreground` works).
        let owner = mount
            .controller_owner_ref(&())
            .map(|o| OwnerReference {
                block_owner_deletion: Some(true),
                ..o
            })
            .ok_or(BuildError::Metadata("uid"))?;
        let image = image(mount, settings);
        let slave_image = slave_image.unwrap_or_else(|| image.clone());
        Ok(Ctx {
            mount,
            name: mount.name_any(),
            namespace,
            owner,
            version: names::image_version(&image),
            image,
            slave_version: names::image_version(&slave_image),
            slave_image,
        })
    }

    fn meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let version = match component {
            Component::Slave => self.slave_version.as_deref(),
            _ => self.version.as_deref(),
        };
        names::labels(&self.name, component, version)
    }

    fn image(&self, component: Component) -> String {
        match component {
            Component::Slave => self.slave_image.clone(),
            _ => self.image.clone(),
        }
    }

    fn selector(&self, component: Component) -> LabelSelector {
        LabelSelector {
            match_labels: Some(names::selector(&self.name, component)),
            ..Default::default()
        }
    }
}

/// Builds every child of `mount`. `streams` are its Streams, already validated
/// (see [`validate::stream_config`]); `existing_link` is the link Secret if it
/// exists (its values are kept); `generate` makes a new secret value;
/// `slave_image` is the image the slaves keep while the master rolls to a new
/// one ([`crate::rollout::slave_image`]; `None`: the mount's image).
pub fn children(
    mount: &SourceMount,
    streams: &[StreamConfig],
    existing_link: Option<&Secret>,
    settings: &Settings,
    generate: &mut dyn FnMut() -> String,
    slave_image: Option<String>,
) -> Result<Children, BuildError> {
    let ctx = Ctx::new(mount, settings, slave_image)?;
    Ok(Children {
        config_map: config_map(&ctx, streams)?,
        link_secret: link_secret(&ctx, existing_link, generate),
        master_deployment: master_deployment(&ctx),
        master_service: master_service(&ctx),
        source_service: source_service(&ctx),
        slaves: slave_workload(&ctx),
        slave_service: slave_service(&ctx),
        pod_disruption_budget: pod_disruption_budget(&ctx),
    })
}

/// The master's config: the mount, its streams, dumps, secrets from files.
pub fn master_config(mount: &SourceMount, streams: &[StreamConfig]) -> Result<Config, BuildError> {
    let mount_config = validate::source_mount_config(mount).map_err(BuildError::Invalid)?;
    let config = Config {
        mode: Mode::Master,
        admin: admin_config(),
        link: Some(link_config()),
        dumps: Some(DumpsConfig {
            dir: names::DUMPS_DIR.into(),
            interval_seconds: mount.spec.master.dump_interval_seconds,
        }),
        source_mounts: vec![mount_config],
        streams: streams.to_vec(),
        ..Config::default()
    };
    config.validate()?;
    Ok(config)
}

/// The slaves' config: where the master is; streams come from the master.
pub fn slave_config(mount: &SourceMount) -> Result<Config, BuildError> {
    let namespace = mount.namespace().ok_or(BuildError::Metadata("namespace"))?;
    let config = Config {
        mode: Mode::Slave,
        admin: admin_config(),
        link: Some(link_config()),
        master: Some(MasterConfig {
            url: names::master_url(&mount.name_any(), &namespace),
        }),
        ..Config::default()
    };
    config.validate()?;
    Ok(config)
}

fn admin_config() -> AdminConfig {
    AdminConfig {
        token_file: Some(format!("{}/{}", names::LINK_DIR, names::ADMIN_TOKEN_KEY).into()),
        ..AdminConfig::default()
    }
}

fn link_config() -> LinkConfig {
    LinkConfig {
        secret_file: Some(format!("{}/{}", names::LINK_DIR, names::LINK_SECRET_KEY).into()),
        secret: None,
        resync_grace_seconds: None,
    }
}

fn config_map(ctx: &Ctx<'_>, streams: &[StreamConfig]) -> Result<ConfigMap, BuildError> {
    let master = master_config(ctx.mount, streams)?.to_yaml_string()?;
    let slave = slave_config(ctx.mount)?.to_yaml_string()?;
    Ok(ConfigMap {
        metadata: ctx.meta(names::config_map(&ctx.name), Component::Shared),
        data: Some(BTreeMap::from([
            (names::MASTER_CONFIG_KEY.to_string(), master),
            (names::SLAVE_CONFIG_KEY.to_string(), slave),
        ])),
        ..Default::default()
    })
}

/// The link Secret: the existing values when there are any, new ones otherwise.
fn link_secret(
    ctx: &Ctx<'_>,
    existing: Option<&Secret>,
    generate: &mut dyn FnMut() -> String,
) -> Secret {
    let old = existing.and_then(|s| s.data.as_ref());
    let mut data = BTreeMap::new();
    for key in [names::LINK_SECRET_KEY, names::ADMIN_TOKEN_KEY] {
        let value = old
            .and_then(|d| d.get(key))
            .filter(|v| !v.0.is_empty())
            .cloned()
            .unwrap_or_else(|| ByteString(generate().into_bytes()));
        data.insert(key.to_string(), value);
    }
    Secret {
        metadata: ctx.meta(names::link_secret(&ctx.name), Component::Shared),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn master_deployment(ctx: &Ctx<'_>) -> Deployment {
    let spec = &ctx.mount.spec;
    let mut volumes = common_volumes(ctx, names::MASTER_CONFIG_KEY);
    volumes.push(Volume {
        name: "source-password".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(spec.password.secret_key_ref.name.clone()),
            items: Some(vec![KeyToPath {
                key: spec.password.secret_key_ref.key.clone(),
                path: names::SOURCE_PASSWORD_FILE.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    });
    volumes.push(match &spec.master.dumps_claim_name {
        Some(claim) => Volume {
            name: "dumps".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        None => Volume {
            name: "dumps".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    });
    let mut mounts = common_mounts();
    mounts.push(volume_mount(
        "source-password",
        names::SOURCE_PASSWORD_DIR,
        true,
    ));
    mounts.push(volume_mount("dumps", names::DUMPS_DIR, false));
    let container = Container {
        ports: Some(vec![
            container_port("source", names::SOURCE_PORT),
            container_port("admin", names::ADMIN_PORT),
        ]),
        readiness_probe: Some(http_probe("/readyz", names::ADMIN_PORT, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", names::ADMIN_PORT, 10, 6)),
        resources: spec.master.resources.clone(),
        volume_mounts: Some(mounts),
        ..streamer_container(ctx, Component::Master, vec![])
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: non_empty(&spec.master.node_selector),
        // A master that is shutting down writes its dumps first.
        termination_grace_period_seconds: Some(60),
        ..pod_defaults()
    };
    Deployment {
        metadata: ctx.meta(names::master(&ctx.name), Component::Master),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // Never two masters: sources and the dump directory belong to one.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: ctx.selector(Component::Master),
            template: pod_template(ctx, Component::Master, pod),
            ..Default::default()
        }),
        status: None,
    }
}

fn master_service(ctx: &Ctx<'_>) -> Service {
    Service {
        metadata: ctx.meta(names::master(&ctx.name), Component::Master),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::selector(&ctx.name, Component::Master)),
            ports: Some(vec![
                service_port("source", names::SOURCE_PORT),
                service_port("admin", names::ADMIN_PORT),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

fn source_service(ctx: &Ctx<'_>) -> Option<Service> {
    let type_ = ctx.mount.spec.master.service_type;
    if type_ == ServiceType::ClusterIP {
        return None;
    }
    Some(Service {
        metadata: ctx.meta(names::source_service(&ctx.name), Component::Master),
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().into()),
            selector: Some(names::selector(&ctx.name, Component::Master)),
            ports: Some(vec![service_port("source", names::SOURCE_PORT)]),
            ..Default::default()
        }),
        status: None,
    })
}

fn slave_workload(ctx: &Ctx<'_>) -> SlaveWorkload {
    let spec = &ctx.mount.spec.slaves;
    let grace = i64::from(spec.drain_seconds) + 10;
    let mut mounts = common_mounts();
    let mut volumes = common_volumes(ctx, names::SLAVE_CONFIG_KEY);
    let drain_seconds = spec.drain_seconds.to_string();
    let handoff_wait = names::HANDOFF_WAIT_SECONDS.to_string();
    let (args, pre_stop) = match spec.handoff {
        Handoff::Drain => (
            vec![],
            vec![
                names::BINARY,
                "handoff",
                "--drain",
                "--seconds",
                drain_seconds.as_str(),
            ],
        ),
        // The new pod is Ready (below) only once it listens on the handoff
        // socket; still, wait for it rather than fail, and when none comes
        // (the node is drained, the DaemonSet deleted) drain instead.
        Handoff::Socket => (
            vec!["--handoff-from", names::HANDOFF_SOCKET],
            vec![
                names::BINARY,
                "handoff",
                "--to",
                names::HANDOFF_SOCKET,
                "--wait",
                handoff_wait.as_str(),
                "--fallback-drain",
                drain_seconds.as_str(),
            ],
        ),
    };
    let readiness = match spec.handoff {
        Handoff::Drain => http_probe("/readyz", names::LISTENER_PORT, 5, 3),
        // On the host network the listener port is shared with the pod being
        // replaced, which would answer an HTTP probe: ask this pod's own
        // server (caught up with the master, listening for the handoff).
        Handoff::Socket => Probe {
            exec: Some(ExecAction {
                command: Some(vec![names::BINARY.into(), "ready".into()]),
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            timeout_seconds: Some(2),
            ..Default::default()
        },
    };
    let grace = match spec.handoff {
        Handoff::Drain => grace,
        Handoff::Socket => grace + names::HANDOFF_WAIT_SECONDS,
    };
    let mut container = Container {
        readiness_probe: Some(readiness),
        liveness_probe: Some(http_probe("/healthz", names::ADMIN_PORT, 10, 6)),
        resources: spec.resources.clone(),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(pre_stop.into_iter().map(String::from).collect()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // The server listens there; the preStop hook (same environment) talks to it.
        env: Some(vec![
            EnvVar {
                name: "STREAMMACHINE_CONTROL_SOCKET".into(),
                value: Some(names::CONTROL_SOCKET.into()),
                value_from: None,
            },
            // The name the slave gives its master: the pod's, unique even on
            // the host network (where HOSTNAME is the node's).
            EnvVar {
                name: "STREAMMACHINE_SLAVE_NAME".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
        ]),
        ..streamer_container(ctx, Component::Slave, args)
    };
    let node_selector = non_empty(&spec.node_selector);
    match spec.handoff {
        Handoff::Drain => {
            container.ports = Some(vec![
                container_port("http", names::LISTENER_PORT),
                container_port("admin", names::ADMIN_PORT),
            ]);
            container.volume_mounts = Some(mounts);
            let pod = PodSpec {
                containers: vec![container],
                volumes: Some(volumes),
                node_selector,
                termination_grace_period_seconds: Some(grace),
                topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "kubernetes.io/hostname".into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                    label_selector: Some(ctx.selector(Component::Slave)),
                    ..Default::default()
                }]),
                ..pod_defaults()
            };
            SlaveWorkload::Deployment(Box::new(Deployment {
                metadata: ctx.meta(names::slave(&ctx.name), Component::Slave),
                spec: Some(DeploymentSpec {
                    replicas: Some(spec.replicas),
                    // A new slave syncs its buffers and becomes ready before an
                    // old one starts draining.
                    strategy: Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        }),
                    }),
                    selector: ctx.selector(Component::Slave),
                    template: pod_template(ctx, Component::Slave, pod),
                    ..Default::default()
                }),
                status: None,
            }))
        }
        Handoff::Socket => {
            // No declared ports: on the host network Kubernetes would turn them
            // into hostPorts, and the scheduler would then refuse to start the
            // new pod next to the old one. SO_REUSEPORT lets both bind.
            container.ports = None;
            mounts.push(volume_mount("handoff", names::HANDOFF_DIR, false));
            container.volume_mounts = Some(mounts);
            volumes.push(Volume {
                name: "handoff".into(),
                host_path: Some(HostPathVolumeSource {
                    path: names::host_handoff_dir(&ctx.name, &ctx.namespace),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            });
            // The kubelet creates the directory as root; the streamer is not.
            let init = Container {
                name: "handoff-dir".into(),
                image: Some(ctx.image(Component::Slave)),
                image_pull_policy: ctx.mount.spec.image_pull_policy.map(|p| p.as_str().into()),
                command: Some(vec![
                    "chown".into(),
                    format!("{}:{}", names::RUN_AS, names::RUN_AS),
                    names::HANDOFF_DIR.into(),
                ]),
                security_context: Some(SecurityContext {
                    run_as_user: Some(0),
                    run_as_group: Some(0),
                    run_as_non_root: Some(false),
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        add: Some(vec!["CHOWN".into()]),
                        drop: Some(vec!["ALL".into()]),
                    }),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), Quantity("10m".into())),
                        ("memory".to_string(), Quantity("16Mi".into())),
                    ])),
                    limits: Some(BTreeMap::from([(
                        "memory".to_string(),
                        Quantity("16Mi".into()),
                    )])),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![volume_mount("handoff", names::HANDOFF_DIR, false)]),
                ..Default::default()
            };
            let pod = PodSpec {
                host_network: Some(true),
                // Service names must still resolve on the host network.
                dns_policy: Some("ClusterFirstWithHostNet".into()),
                init_containers: Some(vec![init]),
                containers: vec![container],
                volumes: Some(volumes),
                node_selector,
                termination_grace_period_seconds: Some(grace),
                ..pod_defaults()
            };
            SlaveWorkload::DaemonSet(Box::new(DaemonSet {
                metadata: ctx.meta(names::slave(&ctx.name), Component::Slave),
                spec: Some(DaemonSetSpec {
                    // The new pod starts beside the old one, syncs, becomes
                    // ready; then the old one hands its listeners over.
                    update_strategy: Some(DaemonSetUpdateStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDaemonSet {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        }),
                    }),
                    selector: ctx.selector(Component::Slave),
                    template: pod_template(ctx, Component::Slave, pod),
                    ..Default::default()
                }),
                status: None,
            }))
        }
    }
}

fn slave_service(ctx: &Ctx<'_>) -> Service {
    let spec = &ctx.mount.spec.slaves.service;
    let mut metadata = ctx.meta(names::slave(&ctx.name), Component::Slave);
    metadata.annotations = non_empty(&spec.annotations);
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().into()),
            selector: Some(names::selector(&ctx.name, Component::Slave)),
            ports: Some(vec![service_port("http", names::LISTENER_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_disruption_budget(ctx: &Ctx<'_>) -> Option<PodDisruptionBudget> {
    if ctx.mount.spec.slaves.handoff != Handoff::Drain {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: ctx.meta(names::slave(&ctx.name), Component::Slave),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(ctx.selector(Component::Slave)),
            ..Default::default()
        }),
        status: None,
    })
}

fn streamer_container(ctx: &Ctx<'_>, component: Component, extra_args: Vec<&str>) -> Container {
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

fn pod_defaults() -> PodSpec {
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

fn pod_template(ctx: &Ctx<'_>, component: Component, spec: PodSpec) -> PodTemplateSpec {
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
fn common_volumes(ctx: &Ctx<'_>, config_key: &str) -> Vec<Volume> {
    vec![
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
}

fn common_mounts() -> Vec<VolumeMount> {
    vec![
        volume_mount("config", names::CONFIG_DIR, true),
        volume_mount("link", names::LINK_DIR, true),
        volume_mount("tmp", "/tmp", false),
    ]
}

fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
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

fn non_empty(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use streammachine_crds::v1alpha1::Handoff;

    fn settings() -> Settings {
        Settings {
            default_image: "streammachine:0.1.0".into(),
        }
    }

    fn build(mount: &SourceMount, streams: &[StreamConfig]) -> Children {
        children(
            mount,
            streams,
            None,
            &settings(),
            &mut testdata::counter(),
            None,
        )
        .unwrap()
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn rendered_configs_load_in_the_streamer() {
        let m = testdata::mount("main");
        let s = validate::stream_config(&testdata::stream("hits", "main"), Some(&m)).unwrap();
        let c = build(&m, &[s]);
        let data = c.config_map.data.unwrap();
        for key in [names::MASTER_CONFIG_KEY, names::SLAVE_CONFIG_KEY] {
            let parsed = Config::from_yaml_str(&data[key]).unwrap();
            parsed.validate().unwrap();
        }
        let master = Config::from_yaml_str(&data[names::MASTER_CONFIG_KEY]).unwrap();
        assert_eq!(master.mode, Mode::Master);
        assert_eq!(master.streams[0].key, "hits");
        let slave = Config::from_yaml_str(&data[names::SLAVE_CONFIG_KEY]).unwrap();
        assert_eq!(
            slave.master.unwrap().url,
            "http://main-master.radio.svc:8002"
        );
    }

    #[test]
    fn config_changes_leave_the_pod_templates_alone() {
        let m = testdata::mount("main");
        let a = build(&m, &[]);
        let s = validate::stream_config(&testdata::stream("hits", "main"), Some(&m)).unwrap();
        let b = build(&m, &[s]);
        assert_ne!(a.config_map, b.config_map);
        assert_eq!(a.master_deployment, b.master_deployment);
        assert_eq!(a.slaves, b.slaves);
    }

    #[test]
    fn the_link_secret_is_kept() {
        let m = testdata::mount("main");
        let first = build(&m, &[]);
        let again = children(
            &m,
            &[],
            Some(&first.link_secret),
            &settings(),
            &mut || "other".to_string(),
            None,
        )
        .unwrap();
        assert_eq!(first.link_secret, again.link_secret);
        let data = first.link_secret.data.unwrap();
        assert_ne!(data[names::LINK_SECRET_KEY], data[names::ADMIN_TOKEN_KEY]);
    }

    #[test]
    fn every_child_is_owned_by_the_mount() {
        let m = testdata::mount("main");
        let c = build(&m, &[]);
        let SlaveWorkload::Deployment(slaves) = &c.slaves else {
            panic!("Drain is a Deployment")
        };
        for meta in [
            &c.config_map.metadata,
            &c.link_secret.metadata,
            &c.master_deployment.metadata,
            &c.master_service.metadata,
            &slaves.metadata,
            &c.slave_service.metadata,
            &c.pod_disruption_budget.as_ref().unwrap().metadata,
        ] {
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "SourceMount");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(owners[0].uid, m.metadata.uid.clone().unwrap());
        }
    }

    #[test]
    fn drain_slaves_are_a_deployment_with_a_drain_hook() {
        let mut m = testdata::mount("main");
        m.spec.slaves.drain_seconds = 120;
        let c = build(&m, &[]);
        let SlaveWorkload::Deployment(d) = &c.slaves else {
            panic!("Drain is a Deployment")
        };
        let p = pod(d);
        assert_eq!(p.termination_grace_period_seconds, Some(130));
        let hook = p.containers[0]
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap();
        assert_eq!(
            hook.exec.as_ref().unwrap().command.as_ref().unwrap(),
            &["streammachine", "handoff", "--drain", "--seconds", "120"]
        );
        assert_eq!(
            c.stale("main"),
            [
                (StaleKind::DaemonSet, "main-slave".to_string()),
                (StaleKind::Service, "main-source".to_string())
            ]
        );
    }

    #[test]
    fn socket_slaves_are_a_host_network_daemonset_without_host_ports() {
        let mut m = testdata::mount("main");
        m.spec.slaves.handoff = Handoff::Socket;
        let c = build(&m, &[]);
        let SlaveWorkload::DaemonSet(ds) = &c.slaves else {
            panic!("Socket is a DaemonSet")
        };
        let spec = ds.spec.as_ref().unwrap();
        let ru = spec
            .update_strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let p = spec.template.spec.as_ref().unwrap();
        assert_eq!(p.host_network, Some(true));
        assert!(p.containers.iter().all(|c| c.ports.is_none()));
        let hp = p
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.host_path.as_ref())
            .unwrap();
        assert_eq!(hp.path, "/var/run/streammachine/radio/main");
        assert!(c.pod_disruption_budget.is_none());
        assert!(c
            .stale("main")
            .contains(&(StaleKind::Deployment, "main-slave".to_string())));
    }

    #[test]
    fn an_external_source_service_exposes_only_the_source_port() {
        let mut m = testdata::mount("main");
        m.spec.master.service_type = ServiceType::LoadBalancer;
        let c = build(&m, &[]);
        let s = c.source_service.unwrap();
        let spec = s.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap().len(), 1);
        assert_eq!(
            c.master_service.spec.unwrap().type_.as_deref(),
            Some("ClusterIP")
        );
    }

    #[test]
    fn a_mount_without_uid_is_refused() {
        let mut m = testdata::mount("main");
        m.metadata.uid = None;
        let e = children(&m, &[], None, &settings(), &mut testdata::counter(), None).unwrap_err();
        assert!(matches!(e, BuildError::Metadata("uid")), "{e}");
    }
}
