//! The OpenAPI 3.0 document of the admin API, generated from the route table
//! and the configuration types' JSON schemas.

use serde_json::{json, Map, Value};
use streammachine_crds::config::{SourceMountConfig, StreamConfig};

use super::{Metadata, ROUTES};

/// A request body type.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A stream's settings.
    Stream,
    /// A source mount's settings.
    SourceMount,
    /// A title.
    Metadata,
    /// A rewind dump (binary).
    Dump,
}

impl Body {
    fn name(self) -> &'static str {
        match self {
            Body::Stream => "StreamConfig",
            Body::SourceMount => "SourceMountConfig",
            Body::Metadata => "Metadata",
            Body::Dump => "Dump",
        }
    }
}

/// Turns a schemars root schema into an OpenAPI component, moving its
/// definitions into `components.schemas` and fixing the `$ref` paths.
fn component(mut schema: Value, defs: &mut Map<String, Value>) -> Value {
    if let Some(Value::Object(d)) = schema.as_object_mut().and_then(|o| o.remove("definitions")) {
        for (k, v) in d {
            defs.insert(k, v);
        }
    }
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    schema
}

fn fix_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                *r = r.replace("#/definitions/", "#/components/schemas/");
            }
            for (_, x) in o.iter_mut() {
                fix_refs(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(fix_refs),
        _ => {}
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let stream = serde_json::to_value(schemars::schema_for!(StreamConfig)).unwrap_or(Value::Null);
    let mount =
        serde_json::to_value(schemars::schema_for!(SourceMountConfig)).unwrap_or(Value::Null);
    let meta = serde_json::to_value(schemars::schema_for!(Metadata)).unwrap_or(Value::Null);
    let s = component(stream, &mut schemas);
    schemas.insert("StreamConfig".into(), s);
    let m = component(mount, &mut schemas);
    schemas.insert("SourceMountConfig".into(), m);
    let t = component(meta, &mut schemas);
    schemas.insert("Metadata".into(), t);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What is wrong."},
                "field": {"type": "string", "description": "The request field at fault, when there is one."}
            }
        }),
    );
    let mut paths = Map::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!(
                "{}{}",
                r.method.to_ascii_lowercase(),
                r.path.replace(['/', '{', '}', '-', '.'], "_")
            )),
        );
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = r.body {
            let content = match b {
                Body::Dump => {
                    json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})
                }
                _ => {
                    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", b.name())}}})
                }
            };
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let mut responses = Map::new();
        for (code, what) in r.responses {
            let mut resp = json!({"description": what});
            if *code >= 400 {
                resp["content"] =
                    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
            } else if r.method == "GET" && r.path.ends_with("/rewind") {
                resp["content"] = json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}});
            } else if *code != 204 {
                resp["content"] = json!({"application/json": {"schema": {"type": "object"}}});
            }
            responses.insert(code.to_string(), resp);
        }
        op.insert("responses".into(), Value::Object(responses));
        if r.auth {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(o) = entry.as_object_mut() {
            o.insert(r.method.to_ascii_lowercase(), Value::Object(op));
        }
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "StreamMachine admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Streams and source mounts, changed live; sources, titles, status. Authenticate with `Authorization: Bearer <admin token>`."
        },
        "paths": Value::Object(paths),
        "components": {
            "schemas": Value::Object(schemas),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    });
    fix_refs(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_refs_resolve() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            assert!(op["responses"].as_object().is_some_and(|m| !m.is_empty()));
        }
        // Every $ref points at a schema that exists.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        out.push(r.clone());
                    }
                    o.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling {r}"
            );
        }
        // The stream schema documents its fields from the doc comments.
        let props = &doc["components"]["schemas"]["StreamConfig"]["properties"];
        assert!(props["rewindSeconds"]["description"]
            .as_str()
            .unwrap()
            .contains("rewind"));
    }
}
