//! The master Deployment: one replica, `Recreate`, dumps on a volume.

use super::*;

pub(super) fn master_deployment(ctx: &Ctx<'_>) -> Deployment {
    let spec = &ctx.mount.spec;
    let mut volumes = common_volumes(ctx, names::MASTER_CONFIG_KEY);
    volumes.push(secret_key_volume(
        "source-password",
        &spec.password.secret_key_ref,
        names::SOURCE_PASSWORD_FILE,
    ));
    // The inputs' passwords, one file each (named like the input), from
    // whichever Secrets they name.
    if !spec.inputs.is_empty() {
        let sources = spec
            .inputs
            .iter()
            .map(|i| SecretProjection {
                name: i.password.secret_key_ref.name.clone(),
                items: Some(vec![KeyToPath {
                    key: i.password.secret_key_ref.key.clone(),
                    path: i.name.clone(),
                    mode: None,
                }]),
                optional: Some(false),
            })
            .map(|secret| VolumeProjection {
                secret: Some(secret),
                ..Default::default()
            })
            .collect();
        volumes.push(Volume {
            name: "input-passwords".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: Some(0o440),
            }),
            ..Default::default()
        });
    }
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
    let mut mounts = common_mounts(ctx);
    mounts.push(volume_mount(
        "source-password",
        names::SOURCE_PASSWORD_DIR,
        true,
    ));
    if !spec.inputs.is_empty() {
        mounts.push(volume_mount("input-passwords", names::INPUTS_DIR, true));
    }
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
