//! The OpenAPI 3.0 document of the admin API, generated from the route table
//! and the configuration types' JSON schemas.

use serde_json::{json, Map, Value};
use streammachine_config::{SourceMountConfig, StreamConfig};

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

/// A type's schema in OpenAPI 3.0's dialect (`nullable`, not type lists;
/// references into `#/components/schemas/`).
fn openapi_schema<T: schemars::JsonSchema>() -> Value {
    let root = schemars::gen::SchemaSettings::openapi3()
        .into_generator()
        .into_root_schema_for::<T>();
    serde_json::to_value(root).unwrap_or(Value::Null)
}

/// The schema of a route's success body, by method and path.
fn reply_schema(method: &str, path: &str) -> Value {
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let list = |name: &str| json!({"type": "array", "items": r(name)});
    match (method, path) {
        ("GET", "/api/status") => r("Status"),
        ("GET", "/api/config") => r("Config"),
        ("GET", "/api/slaves") => list("Slave"),
        ("GET", "/api/streams") => list("Stream"),
        ("POST", "/api/streams") | ("GET" | "PUT", "/api/streams/{key}") => r("Stream"),
        ("GET", "/api/source-mounts") => list("SourceMount"),
        ("POST", "/api/source-mounts") | ("GET" | "PUT", "/api/source-mounts/{key}") => {
            r("SourceMount")
        }
        ("GET", "/api/source-mounts/{key}/sources")
        | ("POST", "/api/source-mounts/{key}/sources/{id}/promote") => list("Source"),
        (_, p) if p.ends_with("/metadata") => r("TitleSet"),
        _ => json!({"type": "object"}),
    }
}

/// The hand-written schemas of what the API answers (the settings types come
/// from the configuration's own schemas).
fn reply_schemas(schemas: &mut Map<String, Value>) {
    let int = json!({"type": "integer"});
    let num = json!({"type": "number"});
    let string = json!({"type": "string"});
    let opt_string = json!({"type": "string", "nullable": true});
    let counts = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    schemas.insert(
        "Stream".into(),
        json!({
            "type": "object",
            "description": "A stream: its status and settings.",
            "required": ["key", "format", "sourceMount", "sourceConnected", "title", "listeners", "listenersByOutput", "listenerPeak", "buffer", "config"],
            "properties": {
                "key": string, "format": string, "formatKey": opt_string,
                "sourceMount": string, "sourceConnected": {"type": "boolean"},
                "title": string, "listeners": int, "listenerPeak": int,
                "listenersByOutput": {
                    "type": "object",
                    "required": ["raw", "icy", "pump", "hls"],
                    "properties": {"raw": int, "icy": int, "pump": int, "hls": int}
                },
                "buffer": {
                    "type": "object",
                    "required": ["seconds", "bytes", "chunks", "firstSeq", "nextSeq"],
                    "properties": {
                        "seconds": num, "bytes": int, "chunks": int, "firstSeq": int, "nextSeq": int,
                        "oldest": opt_string, "newest": opt_string
                    }
                },
                "transcoder": {"type": "object", "nullable": true},
                "config": {"$ref": "#/components/schemas/StreamConfig"}
            }
        }),
    );
    schemas.insert(
        "Source".into(),
        json!({
            "type": "object",
            "description": "An encoder connected to a mount; the first is on air.",
            "required": ["id", "active"],
            "properties": {
                "id": int, "active": {"type": "boolean"}, "priority": int,
                "fallback": {"type": "boolean"}, "remote": opt_string,
                "userAgent": opt_string, "contentType": opt_string, "name": opt_string,
                "description": opt_string, "genre": opt_string, "url": opt_string,
                "audioInfo": opt_string, "formatKey": opt_string
            }
        }),
    );
    schemas.insert(
        "SourceMount".into(),
        json!({
            "type": "object",
            "description": "A source mount: where encoders connect.",
            "required": ["key", "format", "streams", "sources"],
            "properties": {
                "key": string, "format": string, "monitored": {"type": "boolean"},
                "title": opt_string,
                "streams": {"type": "array", "items": string},
                "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"}},
                "config": {"allOf": [{"$ref": "#/components/schemas/SourceMountConfig"}], "nullable": true}
            }
        }),
    );
    schemas.insert(
        "Slave".into(),
        json!({
            "type": "object",
            "description": "A slave connected to this master.",
            "required": ["id", "address", "connectedAt", "lastSeenSecondsAgo", "listeners", "nextSeq", "chunksBehind"],
            "properties": {
                "id": string, "address": string, "connectedAt": string, "lastSeenSecondsAgo": num,
                "listeners": counts, "nextSeq": counts, "chunksBehind": counts
            }
        }),
    );
    schemas.insert(
        "Status".into(),
        json!({
            "type": "object",
            "required": ["version", "mode", "uptimeSeconds", "streams", "sourceMounts"],
            "properties": {
                "version": string, "mode": string, "uptimeSeconds": int,
                "streams": {"type": "array", "items": {"$ref": "#/components/schemas/Stream"}},
                "sourceMounts": {"type": "array", "items": {"$ref": "#/components/schemas/SourceMount"}}
            }
        }),
    );
    schemas.insert(
        "TitleSet".into(),
        json!({
            "type": "object",
            "required": ["mount", "title"],
            "properties": {"mount": string, "title": opt_string}
        }),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let stream = openapi_schema::<StreamConfig>();
    let mount = openapi_schema::<SourceMountConfig>();
    let meta = openapi_schema::<Metadata>();
    let s = component(stream, &mut schemas);
    schemas.insert("StreamConfig".into(), s);
    let m = component(mount, &mut schemas);
    schemas.insert("SourceMountConfig".into(), m);
    let t = component(meta, &mut schemas);
    schemas.insert("Metadata".into(), t);
    let config = openapi_schema::<streammachine_config::Config>();
    let c = component(config, &mut schemas);
    schemas.insert("Config".into(), c);
    reply_schemas(&mut schemas);
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
                resp["content"] =
                    json!({"application/json": {"schema": reply_schema(r.method, r.path)}});
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
        // OpenAPI 3.0's dialect: `nullable`, never a list of types.
        fn type_lists(v: &Value) -> usize {
            match v {
                Value::Object(o) => {
                    usize::from(o.get("type").is_some_and(Value::is_array))
                        + o.values().map(type_lists).sum::<usize>()
                }
                Value::Array(a) => a.iter().map(type_lists).sum(),
                _ => 0,
            }
        }
        assert_eq!(type_lists(&doc), 0);
        assert!(doc["components"]["schemas"]["Config"].is_object());
        // The stream schema documents its fields from the doc comments.
        let props = &doc["components"]["schemas"]["StreamConfig"]["properties"];
        assert!(props["rewindSeconds"]["description"]
            .as_str()
            .unwrap()
            .contains("rewind"));
    }
}
