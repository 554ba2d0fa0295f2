//! The ConfigMap: the streamer's own configs for the master and the slaves,
//! mounted as a directory so a config change never changes a pod template.

use super::*;

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
        // The master serves no listeners, but checks that a signedUrls
        // stream has its key.
        listeners: ListenersConfig {
            url_secret_file: validate::url_secret_file(mount),
            ..ListenersConfig::default()
        },
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
        listeners: slave_listeners(mount),
        ..Config::default()
    };
    config.validate()?;
    Ok(config)
}

/// The slaves' listener port: the SourceMount's `listeners` settings.
fn slave_listeners(mount: &SourceMount) -> ListenersConfig {
    let spec = mount.spec.listeners.clone().unwrap_or_default();
    ListenersConfig {
        max_listeners: spec.max_listeners,
        deny: spec.deny,
        url_secret_file: validate::url_secret_file(mount),
        ..ListenersConfig::default()
    }
}

pub(super) fn admin_config() -> AdminConfig {
    AdminConfig {
        token_file: Some(format!("{}/{}", names::LINK_DIR, names::ADMIN_TOKEN_KEY).into()),
        ..AdminConfig::default()
    }
}

pub(super) fn link_config() -> LinkConfig {
    LinkConfig {
        secret_file: Some(format!("{}/{}", names::LINK_DIR, names::LINK_SECRET_KEY).into()),
        secret: None,
        resync_grace_seconds: None,
    }
}

pub(super) fn config_map(ctx: &Ctx<'_>, streams: &[StreamConfig]) -> Result<ConfigMap, BuildError> {
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
