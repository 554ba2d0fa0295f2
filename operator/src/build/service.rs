//! The Services: the master's (sources and slaves), the source port alone
//! for outside encoders, and the slaves' (listeners).

use super::*;

pub(super) fn master_service(ctx: &Ctx<'_>) -> Service {
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

pub(super) fn source_service(ctx: &Ctx<'_>) -> Option<Service> {
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

pub(super) fn slave_service(ctx: &Ctx<'_>) -> Service {
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
