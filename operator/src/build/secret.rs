//! The link Secret: the link secret and the admin token, generated once and kept.

use super::*;

/// The link Secret: the existing values when there are any, new ones otherwise.
pub(super) fn link_secret(
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
