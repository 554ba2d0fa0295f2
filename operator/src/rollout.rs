//! The upgrade order: the master first, the slaves once it serves again.
//!
//! A new image changes both pod templates. Rolled together, a new slave links
//! to a master that has just restarted and has not yet taken its buffer back
//! from the old slaves (DESIGN.md §5: a restarted master re-syncs from them),
//! so the listeners handed to it would be behind its oldest audio. So the
//! slaves keep the image they run until the master Deployment runs the new
//! one, fully rolled out and ready, and the old slaves have linked to it
//! again (the first one to link gives it back its buffer); then they roll (a DaemonSet surge with a
//! socket handoff, or a Deployment that drains).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::names;

/// The image the slaves should run: `desired` once `master` (the master
/// Deployment as it is now) runs `desired`, rolled out and ready, and the
/// slaves running now have linked to it again (`relinked`: `None` when there
/// is no running slave to wait for); `desired` also for new slaves. Until
/// then, the image they run now.
pub fn slave_image(
    desired: &str,
    master: Option<&Deployment>,
    slaves_now: Option<&str>,
    relinked: Option<bool>,
) -> String {
    match slaves_now {
        Some(now)
            if now != desired && !(master_serves(desired, master) && relinked != Some(false)) =>
        {
            now.to_string()
        }
        _ => desired.to_string(),
    }
}

/// Whether [`slave_image`] needs to know if the slaves relinked: they run
/// another image and the master already serves `desired`.
pub fn asks_relinked(desired: &str, master: Option<&Deployment>, slaves_now: Option<&str>) -> bool {
    slaves_now.is_some_and(|now| now != desired) && master_serves(desired, master)
}

/// The master Deployment runs `image`, every replica updated and ready.
fn master_serves(image: &str, master: Option<&Deployment>) -> bool {
    let Some(d) = master else { return false };
    let runs = d
        .spec
        .as_ref()
        .is_some_and(|s| streamer_image(&s.template) == Some(image));
    let Some(st) = &d.status else { return false };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    runs && st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.ready_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}

/// The streamer container's image in a pod template.
pub fn streamer_image(t: &PodTemplateSpec) -> Option<&str> {
    t.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == names::CONTAINER)?
        .image
        .as_deref()
}

/// The streamer image a slave Deployment or DaemonSet runs now.
pub fn slaves_image<'a>(d: Option<&'a Deployment>, ds: Option<&'a DaemonSet>) -> Option<&'a str> {
    d.and_then(|d| streamer_image(&d.spec.as_ref()?.template))
        .or_else(|| ds.and_then(|d| streamer_image(&d.spec.as_ref()?.template)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn master(image: &str, generation: i64, observed: i64, updated: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: names::CONTAINER.into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(1),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn slaves_wait_for_the_master_to_serve_the_new_image() {
        let v2 = "sm:v2";
        let yes = Some(true);
        // The master's template is not even updated yet.
        assert_eq!(
            slave_image(v2, Some(&master("sm:v1", 1, 1, 1, 1)), Some("sm:v1"), yes),
            "sm:v1"
        );
        // Updated template, not observed / not ready yet.
        assert_eq!(
            slave_image(v2, Some(&master(v2, 2, 1, 1, 1)), Some("sm:v1"), yes),
            "sm:v1"
        );
        assert_eq!(
            slave_image(v2, Some(&master(v2, 2, 2, 1, 0)), Some("sm:v1"), yes),
            "sm:v1"
        );
        assert_eq!(
            slave_image(v2, Some(&master(v2, 2, 2, 0, 1)), Some("sm:v1"), yes),
            "sm:v1"
        );
        // Rolled out and ready, but the old slaves have not linked to it yet.
        assert_eq!(
            slave_image(
                v2,
                Some(&master(v2, 2, 2, 1, 1)),
                Some("sm:v1"),
                Some(false)
            ),
            "sm:v1"
        );
        // Rolled out, ready, the slaves relinked: they follow.
        assert_eq!(
            slave_image(v2, Some(&master(v2, 2, 2, 1, 1)), Some("sm:v1"), yes),
            v2
        );
        assert_eq!(
            slave_image(v2, Some(&master(v2, 2, 2, 1, 1)), Some("sm:v1"), None),
            v2
        );
    }

    #[test]
    fn the_relink_is_asked_only_once_the_master_serves() {
        let v2 = "sm:v2";
        assert!(!asks_relinked(
            v2,
            Some(&master(v2, 2, 1, 1, 1)),
            Some("sm:v1")
        ));
        assert!(asks_relinked(
            v2,
            Some(&master(v2, 2, 2, 1, 1)),
            Some("sm:v1")
        ));
        assert!(!asks_relinked(v2, Some(&master(v2, 2, 2, 1, 1)), Some(v2)));
        assert!(!asks_relinked(v2, Some(&master(v2, 2, 2, 1, 1)), None));
    }

    #[test]
    fn new_slaves_and_unchanged_images_need_no_wait() {
        let no = Some(false);
        assert_eq!(slave_image("sm:v2", None, None, no), "sm:v2");
        assert_eq!(slave_image("sm:v2", None, Some("sm:v2"), no), "sm:v2");
    }
}
