//! Content negotiation for resource responses: JSON, Kubernetes protobuf, Table and
//! PartialObjectMetadata(List), chosen from the `Accept` header in the client's order.
//!
//! Protobuf is real (`protobuf.rs`: `k8s\0` + `runtime.Unknown` around the generated
//! message) for the built-in kinds mapped there; custom resources have none, as in kube, and
//! a protobuf-first client of one gets its JSON fallback. `Status` errors of the resource API
//! follow the same first choice ([`protobuf_first`]).

use serde_json::{Value, json};

use crate::protobuf::{self, Kind};
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::table::{self, IncludeObject, TableOptions};

pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

/// One entry of an `Accept` header: a media type and its parameters.
pub struct MediaRange<'a> {
    pub mime: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl MediaRange<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    pub fn is_json(&self) -> bool {
        matches!(self.mime, "application/json" | "application/*" | "*/*")
    }
}

/// The entries of an `Accept` header in the order given (q-values are ignored: clients of
/// the apiserver list their preferences in order).
pub fn parse_accept(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let mime = parts.next().filter(|m| !m.is_empty())?;
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(n, v)| (n.trim(), v.trim()))
                .collect();
            Some(MediaRange { mime, params })
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    Json,
    /// `application/vnd.kubernetes.protobuf`, for a kind `protobuf.rs` maps.
    Protobuf(Kind),
    Table(TableOptions),
    /// PartialObjectMetadata(List) in `meta.k8s.io/<version>`.
    Metadata(&'static str),
}

/// Picks the first representation in `accept` that this fake can produce for `resource`;
/// no `Accept` means JSON, and nothing acceptable is 406 NotAcceptable.
pub fn negotiate(
    accept: Option<&str>,
    resource: &ResourceType,
    include_object: Option<&str>,
) -> Result<Repr, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Repr::Json);
    };
    parse_accept(accept)
        .iter()
        .find_map(|range| choose(range, resource, include_object))
        .ok_or_else(|| {
            ApiError::new(
                406,
                "NotAcceptable",
                format!("only the following media types are accepted: {JSON}, {PROTOBUF}"),
            )
        })
}

fn choose(
    range: &MediaRange,
    resource: &ResourceType,
    include_object: Option<&str>,
) -> Option<Repr> {
    let meta_version = match (range.param("g"), range.param("v")) {
        (Some("meta.k8s.io"), Some("v1")) => Some("v1"),
        (Some("meta.k8s.io"), Some("v1beta1")) => Some("v1beta1"),
        _ => None,
    };
    match (range.mime, range.param("as")) {
        (_, None) if range.is_json() => Some(Repr::Json),
        (PROTOBUF, None) if resource.builtin => Kind::of(resource.kind).map(Repr::Protobuf),
        (_, Some("Table")) if range.is_json() => {
            let include = IncludeObject::parse(include_object);
            meta_version.map(|version| Repr::Table(TableOptions { version, include }))
        }
        (_, Some("PartialObjectMetadata" | "PartialObjectMetadataList")) if range.is_json() => {
            meta_version.map(Repr::Metadata)
        }
        _ => None,
    }
}

impl Repr {
    /// The Content-Type of a GET/LIST answer (`list` selects the PartialObjectMetadataList form).
    pub fn content_type(self, list: bool) -> String {
        match self {
            Repr::Json => JSON.into(),
            Repr::Protobuf(_) => PROTOBUF.into(),
            Repr::Table(options) => {
                format!("application/json;as=Table;v={};g=meta.k8s.io", options.version)
            }
            Repr::Metadata(version) => {
                let kind = if list { "PartialObjectMetadataList" } else { "PartialObjectMetadata" };
                format!("application/json;as={kind};v={version};g=meta.k8s.io")
            }
        }
    }

    /// One object as this representation (a Table has one row).
    pub fn object(self, resource: &ResourceType, object: &Value, with_headers: bool) -> Value {
        match self {
            Repr::Json | Repr::Protobuf(_) => object.clone(),
            Repr::Table(options) => {
                let metadata = json!({ "resourceVersion": object["metadata"]["resourceVersion"] });
                table::render(resource.kind, &[object], metadata, options, with_headers)
            }
            Repr::Metadata(version) => partial_metadata(object, version),
        }
    }

    /// A list as this representation; `list_metadata` carries resourceVersion/continue.
    pub fn list(self, resource: &ResourceType, objects: &[&Value], list_metadata: Value) -> Value {
        match self {
            Repr::Json | Repr::Protobuf(_) => json!({
                "kind": resource.list_kind(),
                "apiVersion": resource.api_version(),
                "metadata": list_metadata,
                "items": objects.iter().map(|o| list_item(resource, o)).collect::<Vec<_>>(),
            }),
            Repr::Table(options) => {
                table::render(resource.kind, objects, list_metadata, options, true)
            }
            Repr::Metadata(version) => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": list_metadata,
                "items": objects.iter().map(|o| partial_metadata(o, version)).collect::<Vec<_>>(),
            }),
        }
    }

    /// Serializes a body built by [`Repr::object`] or [`Repr::list`], or a `Status`.
    pub fn encode(self, value: &Value) -> Vec<u8> {
        match self {
            Repr::Protobuf(kind) => protobuf::encode(kind, value),
            _ => crate::http::json_bytes(value),
        }
    }
}

/// Whether protobuf comes before JSON in `accept`, for a type every client can get in both
/// (a `Status`, a TokenRequest); `None` when `accept` names neither (an absent or empty
/// `Accept` means JSON). Other entries (Table, YAML) are skipped.
pub fn protobuf_first(accept: Option<&str>) -> Option<bool> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(false);
    };
    parse_accept(accept).iter().find_map(|range| match (range.mime, range.param("as")) {
        (PROTOBUF, None) => Some(true),
        (_, None) if range.is_json() => Some(false),
        _ => None,
    })
}

/// Built-in list items carry no kind/apiVersion in kube's JSON; custom resources keep them.
fn list_item(resource: &ResourceType, object: &Value) -> Value {
    let mut item = object.clone();
    if resource.builtin
        && let Some(fields) = item.as_object_mut()
    {
        fields.remove("kind");
        fields.remove("apiVersion");
    }
    item
}

pub fn partial_metadata(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}
