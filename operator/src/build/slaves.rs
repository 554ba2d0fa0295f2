//! The slave workload: a draining Deployment (`handoff: Drain`) or a
//! host-network DaemonSet handing its listeners over (`handoff: Socket`).

use super::*;

pub(super) fn slave_workload(ctx: &Ctx<'_>) -> SlaveWorkload {
    let spec = &ctx.mount.spec.slaves;
    let grace = i64::from(spec.drain_seconds) + 10;
    let mut mounts = common_mounts(ctx);
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
