//! Pure builders: a SourceMount and its (validated) Streams in, the desired
//! child objects out. No client, no clock; the only input from outside is the
//! existing link Secret (its values are kept) and a generator for new ones.
//!
//! The streamer's config lives in a ConfigMap that the pods mount as a
//! directory (not `subPath`), so a config-only change (a Stream added, a title
//! changed) updates the file in place and leaves the pod templates untouched:
//! no rollout, no dropped listener. Only workload settings (image, resources,
//! replicas, handoff mode) change a pod template.

mod config_map;
mod master;
mod pdb;
mod pod;
mod secret;
mod service;
mod slaves;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, HostPathVolumeSource, KeyToPath, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    Secret, SecretProjection, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use streammachine_crds::config::{
    AdminConfig, Config, ConfigError, DumpsConfig, LinkConfig, ListenersConfig, MasterConfig, Mode,
    StreamConfig,
};
use streammachine_crds::v1alpha1::{Handoff, SecretKeySelector, ServiceType, SourceMount};

use crate::names::{self, Component};
use crate::validate::{self, Invalid};

use config_map::*;
pub use config_map::{master_config, slave_config};
use master::*;
use pdb::*;
use pod::*;
use secret::*;
use service::*;
use slaves::*;

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

    /// Issue 12 on Kubernetes: inputs with their Secrets' passwords on the
    /// master, the slaves' listener settings and the key of signed URLs.
    #[test]
    fn inputs_listener_settings_and_the_url_key_reach_the_pods() {
        use streammachine_crds::v1alpha1::{InputSpec, ListenersSpec, SourcePassword};
        let mut m = testdata::mount("main");
        m.spec.inputs = vec![InputSpec {
            name: "studio".into(),
            password: SourcePassword {
                secret_key_ref: SecretKeySelector {
                    name: "studio-secret".into(),
                    key: "pw".into(),
                },
            },
            priority: 10,
        }];
        let mut stream = testdata::stream("hits", "main");
        stream.spec.signed_urls = true;
        let refused = validate::stream_config(&stream, Some(&m)).unwrap_err();
        assert!(refused.message.contains("urlSecret"), "{}", refused.message);
        m.spec.listeners = Some(ListenersSpec {
            max_listeners: Some(500),
            deny: vec!["198.51.100.0/24".into()],
            url_secret_key_ref: Some(SecretKeySelector {
                name: "paywall".into(),
                key: "key".into(),
            }),
        });
        let s = validate::stream_config(&stream, Some(&m)).unwrap();
        let c = build(&m, &[s]);
        let data = c.config_map.data.clone().unwrap();
        let master = Config::from_yaml_str(&data[names::MASTER_CONFIG_KEY]).unwrap();
        master.validate().unwrap();
        let input = &master.source_mounts[0].inputs[0];
        assert_eq!((input.key.as_str(), input.priority), ("studio", 10));
        assert_eq!(
            input.password_file.as_deref(),
            Some(std::path::Path::new(
                "/var/run/secrets/streammachine/inputs/studio"
            ))
        );
        let slave = Config::from_yaml_str(&data[names::SLAVE_CONFIG_KEY]).unwrap();
        slave.validate().unwrap();
        assert_eq!(slave.listeners.max_listeners, Some(500));
        assert_eq!(slave.listeners.deny, ["198.51.100.0/24"]);
        let key_file = Some(std::path::PathBuf::from(
            "/var/run/secrets/streammachine/url/secret",
        ));
        assert_eq!(slave.listeners.url_secret_file, key_file);
        assert_eq!(master.listeners.url_secret_file, key_file);
        // The master mounts the input's Secret key as a file named like it,
        // and both mount the URL key.
        let master_pod = serde_json::to_string(pod(&c.master_deployment)).unwrap();
        for needle in [
            "\"input-passwords\"",
            "\"studio-secret\"",
            "\"path\":\"studio\"",
            "\"paywall\"",
            names::INPUTS_DIR,
            names::URL_SECRET_DIR,
        ] {
            assert!(master_pod.contains(needle), "{needle} in {master_pod}");
        }
        let slaves = match &c.slaves {
            SlaveWorkload::Deployment(d) => serde_json::to_string(d),
            SlaveWorkload::DaemonSet(d) => serde_json::to_string(d),
        }
        .unwrap();
        assert!(slaves.contains("\"paywall\"") && slaves.contains(names::URL_SECRET_DIR));
        assert!(!slaves.contains("studio-secret"), "inputs are the master's");
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
