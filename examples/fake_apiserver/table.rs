//! `meta.k8s.io` Table rendering (what `kubectl get` asks for): per-kind columns and rows
//! whose `object` is a PartialObjectMetadata, the full object, or absent (`includeObject`).

use serde_json::{Value, json};

use crate::clock;
use crate::repr::partial_metadata;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// How to render a table: `meta.k8s.io/<version>` and what each row embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    pub version: &'static str,
    pub include: IncludeObject,
}

struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn column(name: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column { name, kind: "string", priority: 0, cell }
}

const fn wide(name: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column { name, kind: "string", priority: 1, cell }
}

const NAME: Column = column("Name", |o| o["metadata"]["name"].clone());
const AGE: Column = column("Age", age);

static POD_COLUMNS: [Column; 7] = [
    NAME,
    column("Ready", pod_ready),
    column("Status", pod_status),
    Column { name: "Restarts", kind: "integer", priority: 0, cell: pod_restarts },
    AGE,
    wide("IP", |o| text_or_none(&o["status"]["podIP"])),
    wide("Node", |o| text_or_none(&o["spec"]["nodeName"])),
];
static NAMESPACE_COLUMNS: [Column; 3] =
    [NAME, column("Status", |o| o["status"]["phase"].clone()), AGE];
static NODE_COLUMNS: [Column; 5] = [
    NAME,
    column("Status", node_status),
    column("Roles", node_roles),
    AGE,
    column("Version", |o| o["status"]["nodeInfo"]["kubeletVersion"].clone()),
];
/// How many keys `data` holds (config maps and secrets).
const DATA: Column = Column { name: "Data", kind: "integer", priority: 0, cell: data_count };
static CONFIGMAP_COLUMNS: [Column; 3] = [NAME, DATA, AGE];
static SECRET_COLUMNS: [Column; 4] = [NAME, column("Type", |o| o["type"].clone()), DATA, AGE];
static GENERIC_COLUMNS: [Column; 2] = [NAME, AGE];

fn columns_for(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => &POD_COLUMNS,
        "Namespace" => &NAMESPACE_COLUMNS,
        "Node" => &NODE_COLUMNS,
        "ConfigMap" => &CONFIGMAP_COLUMNS,
        "Secret" => &SECRET_COLUMNS,
        _ => &GENERIC_COLUMNS,
    }
}

/// A Table for `objects` of `kind`; `list_metadata` becomes the table's `metadata`. Column
/// definitions are left out when `with_headers` is false (a watch sends them once, first).
pub fn render(
    kind: &str,
    objects: &[&Value],
    list_metadata: Value,
    options: TableOptions,
    with_headers: bool,
) -> Value {
    let columns = columns_for(kind);
    let mut table = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", options.version),
        "metadata": list_metadata,
        "rows": objects.iter().map(|o| row(columns, o, options)).collect::<Vec<_>>(),
    });
    if with_headers {
        table["columnDefinitions"] = columns.iter().map(column_definition).collect();
    }
    table
}

fn column_definition(column: &Column) -> Value {
    let mut definition = json!({
        "name": column.name,
        "type": column.kind,
        "format": "",
        "description": format!("{} of the object.", column.name),
        "priority": column.priority,
    });
    if column.name == "Name" {
        definition["format"] = json!("name");
    }
    definition
}

fn row(columns: &[Column], object: &Value, options: TableOptions) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(object)).collect();
    let mut row = json!({ "cells": cells });
    match options.include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(object, options.version),
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

fn age(object: &Value) -> Value {
    let created = object["metadata"]["creationTimestamp"].as_str().and_then(clock::parse_rfc3339);
    match created {
        Some(created) => json!(clock::short_age(clock::unix_now() - created)),
        None => json!("<unknown>"),
    }
}

fn text_or_none(value: &Value) -> Value {
    if value.is_string() { value.clone() } else { json!("<none>") }
}

fn container_statuses(pod: &Value) -> &[Value] {
    pod["status"]["containerStatuses"].as_array().map_or(&[], Vec::as_slice)
}

fn pod_ready(pod: &Value) -> Value {
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = container_statuses(pod).iter().filter(|s| s["ready"] == json!(true)).count();
    json!(format!("{ready}/{total}"))
}

fn pod_status(pod: &Value) -> Value {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return json!("Terminating");
    }
    pod["status"]["phase"].as_str().map_or(json!("Pending"), |phase| json!(phase))
}

fn pod_restarts(pod: &Value) -> Value {
    json!(container_statuses(pod).iter().filter_map(|s| s["restartCount"].as_i64()).sum::<i64>())
}

fn node_status(node: &Value) -> Value {
    let conditions = node["status"]["conditions"].as_array().map_or(&[][..], Vec::as_slice);
    let ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
    json!(if ready { "Ready" } else { "NotReady" })
}

fn node_roles(node: &Value) -> Value {
    let labels = node["metadata"]["labels"].as_object();
    let roles: Vec<&str> = labels
        .into_iter()
        .flat_map(|labels| labels.keys())
        .filter_map(|key| key.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") })
}

fn data_count(object: &Value) -> Value {
    let count = |field: &str| object[field].as_object().map_or(0, |m| m.len());
    json!(count("data") + count("binaryData"))
}
