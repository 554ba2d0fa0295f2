//! The slaves' PodDisruptionBudget (`handoff: Drain` only).

use super::*;

pub(super) fn pod_disruption_budget(ctx: &Ctx<'_>) -> Option<PodDisruptionBudget> {
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
