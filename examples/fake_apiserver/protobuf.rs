//! Real Kubernetes protobuf for the built-in kinds this fake serves, built with the generated
//! `k8s-pb` types: the `k8s\0` + `runtime.Unknown` envelope, objects, lists, `Status`, the
//! `WatchEvent` of a watch frame, and request bodies decoded back to the fake's JSON.
//!
//! The kinds are the built-in ones `resources.rs` serves (see `kinds!`): Pod, Namespace,
//! ConfigMap, Secret, Service, Node, Event, Deployment, EndpointSlice, Lease. The fake serves
//! no Endpoints or ServiceAccount objects, so none is mapped; a custom resource has no
//! protobuf.
//!
//! k8s-pb has no serde, so each message is mapped to and from JSON by hand, field by field,
//! in the `json_messages!` table below. **A field not in the table is dropped** on the way to
//! protobuf (and never produced on the way back): managedFields, selfLink of objects, probes,
//! security contexts, affinity, resource claims, most volume types (hostPath, emptyDir,
//! secret, configMap, projected, persistentVolumeClaim and downwardAPI are mapped), Event's
//! eventTime/series/related (MicroTime), and whatever is newer than what the tests use.
//! Timestamps are whole seconds (`YYYY-MM-DDTHH:MM:SSZ`, as the fake writes them); another
//! form is dropped.
//!
//! Go's generated code always writes its non-pointer fields, even empty; prost writes what
//! is `Some`. The envelope, `ObjectMeta` (name … creationTimestamp), `ListMeta` and `Status`
//! are filled as Go writes them; deeper fields are written only when the JSON has them (the
//! values a decoder sees are the same). Messages are encoded in field-number order, as Go's.

use std::collections::BTreeMap;
use std::fmt;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordinationv1;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::api::discovery::v1 as discoveryv1;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime as kruntime;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::clock;
use crate::repr::PROTOBUF_MAGIC;
use crate::signing::{base64url, base64url_decode};

/// Why a protobuf request body could not be read.
#[derive(Debug)]
pub enum DecodeError {
    /// The body does not start with `k8s\0`.
    NoMagic,
    /// The `runtime.Unknown` around the object is malformed.
    Envelope(prost::DecodeError),
    /// The object inside is not a valid message of the expected kind.
    Object(prost::DecodeError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DecodeError::NoMagic => f.write_str("no k8s protobuf magic"),
            DecodeError::Envelope(e) => write!(f, "runtime.Unknown: {e}"),
            DecodeError::Object(e) => write!(f, "object: {e}"),
        }
    }
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`, with the empty contentEncoding and
/// contentType kube always writes.
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = kruntime::Unknown {
        type_meta: Some(kruntime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [PROTOBUF_MAGIC, &unknown.encode_to_vec()].concat()
}

/// The `runtime.Unknown` of an enveloped body.
pub fn open_envelope(body: &[u8]) -> Result<kruntime::Unknown, DecodeError> {
    let unknown = body.strip_prefix(PROTOBUF_MAGIC).ok_or(DecodeError::NoMagic)?;
    kruntime::Unknown::decode(unknown).map_err(DecodeError::Envelope)
}

/// `body` (an object of `kind`, a list of them as `repr` builds it, or a `Status`) in
/// protobuf, enveloped.
pub fn encode(kind: Kind, body: &Value) -> Vec<u8> {
    match body["kind"].as_str() {
        Some("Status") => encode_status(body),
        Some(list) if list.strip_suffix("List") == Some(kind.name()) => {
            envelope(kind.api_version(), list, list_message(kind, body))
        }
        _ => envelope(kind.api_version(), kind.name(), kind.encode_message(body)),
    }
}

/// A `Status` (the fake's JSON form, `ApiError::to_status`) in protobuf, enveloped as
/// kube sends errors: typeMeta `v1`/`Status`.
pub fn encode_status(status: &Value) -> Vec<u8> {
    envelope("v1", "Status", status_message(status))
}

/// A bare `WatchEvent` (no envelope: the frame's length prefix is the caller's) carrying
/// `object`, already enveloped.
pub fn watch_event(event_type: &str, object: Vec<u8>) -> Vec<u8> {
    meta::WatchEvent {
        r#type: Some(event_type.into()),
        object: Some(kruntime::RawExtension { raw: Some(object) }),
    }
    .encode_to_vec()
}

/// A request body of `kind` as the fake's JSON object, kind and apiVersion from the envelope.
pub fn decode(kind: Kind, body: &[u8]) -> Result<Value, DecodeError> {
    let unknown = open_envelope(body)?;
    let raw = unknown.raw.unwrap_or_default();
    let mut object = kind.decode_message(&raw).map_err(DecodeError::Object)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    for (field, value) in [("apiVersion", type_meta.api_version), ("kind", type_meta.kind)] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            object[field] = json!(value);
        }
    }
    if let Some(metadata) = object["metadata"].as_object_mut() {
        // Go writes empty names and a zero generation in protobuf; its JSON omits them.
        metadata.retain(|_, v| !(v == "" || v == 0));
    }
    Ok(object)
}

/// A `*List`: ListMeta (field 1) then each item (field 2), the layout every kube list
/// shares, so one function serves all kinds (checked against `PodList` in the tests).
fn list_message(kind: Kind, list: &Value) -> Vec<u8> {
    let mut metadata = meta::ListMeta::read(&list["metadata"]).unwrap_or_default();
    go_list_meta(&mut metadata);
    let mut out = Vec::new();
    prost::encoding::message::encode(1, &metadata, &mut out);
    for item in list["items"].as_array().into_iter().flatten() {
        prost::encoding::bytes::encode(2, &kind.encode_message(item), &mut out);
    }
    out
}

fn status_message(status: &Value) -> Vec<u8> {
    let mut message = meta::Status::read(status).unwrap_or_default();
    go_list_meta(message.metadata.get_or_insert_default());
    for text in [&mut message.status, &mut message.message, &mut message.reason] {
        text.get_or_insert_default();
    }
    message.code.get_or_insert_default();
    message.encode_to_vec()
}

fn go_list_meta(metadata: &mut meta::ListMeta) {
    for text in [&mut metadata.self_link, &mut metadata.resource_version, &mut metadata.r#continue]
    {
        text.get_or_insert_default();
    }
}

fn go_object_meta(metadata: &mut meta::ObjectMeta) {
    for text in [
        &mut metadata.name,
        &mut metadata.generate_name,
        &mut metadata.namespace,
        &mut metadata.self_link,
        &mut metadata.uid,
        &mut metadata.resource_version,
    ] {
        text.get_or_insert_default();
    }
    metadata.generation.get_or_insert_default();
    // A zero Time is written as an empty message.
    metadata.creation_timestamp.get_or_insert_default();
}

/// A top-level kind: a message with ObjectMeta.
trait Object: Json + Message + Default {
    fn metadata(&mut self) -> &mut Option<meta::ObjectMeta>;
}

fn encode_object<M: Object>(object: &Value) -> Vec<u8> {
    let mut message = M::read(object).unwrap_or_default();
    go_object_meta(message.metadata().get_or_insert_default());
    message.encode_to_vec()
}

fn decode_object<M: Object>(raw: &[u8]) -> Result<Value, prost::DecodeError> {
    Ok(M::decode(raw)?.write().unwrap_or_else(|| json!({})))
}

/// Declares [`Kind`], one variant per served built-in kind with its message type and
/// apiVersion, and the functions that dispatch on it.
macro_rules! kinds {
    ($($kind:ident: $message:ty = $api_version:literal),* $(,)?) => {
        /// A built-in kind this fake can answer in protobuf.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind { $($kind),* }

        impl Kind {
            /// The kind named `name` (`Pod`), if it has a protobuf mapping here.
            pub fn of(name: &str) -> Option<Kind> {
                match name {
                    $(stringify!($kind) => Some(Kind::$kind),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind),)* }
            }

            fn api_version(self) -> &'static str {
                match self { $(Kind::$kind => $api_version,)* }
            }

            fn encode_message(self, object: &Value) -> Vec<u8> {
                match self { $(Kind::$kind => encode_object::<$message>(object),)* }
            }

            fn decode_message(self, raw: &[u8]) -> Result<Value, prost::DecodeError> {
                match self { $(Kind::$kind => decode_object::<$message>(raw),)* }
            }
        }

        $(impl Object for $message {
            fn metadata(&mut self) -> &mut Option<meta::ObjectMeta> {
                &mut self.metadata
            }
        })*
    };
}

kinds! {
    Pod: corev1::Pod = "v1",
    Namespace: corev1::Namespace = "v1",
    ConfigMap: corev1::ConfigMap = "v1",
    Secret: corev1::Secret = "v1",
    Service: corev1::Service = "v1",
    Node: corev1::Node = "v1",
    Event: corev1::Event = "v1",
    Deployment: apps::Deployment = "apps/v1",
    EndpointSlice: discoveryv1::EndpointSlice = "discovery.k8s.io/v1",
    Lease: coordinationv1::Lease = "coordination.k8s.io/v1",
}

// ---------------------------------------------------------------------------------------
// JSON <-> message mapping.
// ---------------------------------------------------------------------------------------

/// A value that has a JSON form: a scalar, a message, bytes (base64), a Time, ...
trait Json: Sized {
    /// `None` when `value` is absent (`Null`) or of another JSON type.
    fn read(value: &Value) -> Option<Self>;
    /// `None`: leave the field out of the JSON.
    fn write(&self) -> Option<Value>;
}

/// A message field: `Option<T>`, a repeated `Vec<T>` or a map of `T`.
trait Field: Default {
    fn read(value: &Value) -> Self;
    /// `None` for an absent field or an empty list or map (kube's JSON omits them).
    fn write(&self) -> Option<Value>;
}

impl<T: Json> Field for Option<T> {
    fn read(value: &Value) -> Self {
        T::read(value)
    }

    fn write(&self) -> Option<Value> {
        self.as_ref().and_then(Json::write)
    }
}

impl<T: Json> Field for Vec<T> {
    fn read(value: &Value) -> Self {
        value.as_array().map(|items| items.iter().filter_map(T::read).collect()).unwrap_or_default()
    }

    fn write(&self) -> Option<Value> {
        (!self.is_empty()).then(|| Value::Array(self.iter().filter_map(Json::write).collect()))
    }
}

impl<T: Json> Field for BTreeMap<String, T> {
    fn read(value: &Value) -> Self {
        let entries = value.as_object().into_iter().flatten();
        entries.filter_map(|(k, v)| Some((k.clone(), T::read(v)?))).collect()
    }

    fn write(&self) -> Option<Value> {
        let entries = self.iter().filter_map(|(k, v)| Some((k.clone(), v.write()?)));
        (!self.is_empty()).then(|| Value::Object(entries.collect()))
    }
}

impl Json for String {
    fn read(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_string)
    }

    fn write(&self) -> Option<Value> {
        Some(json!(self))
    }
}

impl Json for bool {
    fn read(value: &Value) -> Option<Self> {
        value.as_bool()
    }

    fn write(&self) -> Option<Value> {
        Some(json!(self))
    }
}

impl Json for i64 {
    fn read(value: &Value) -> Option<Self> {
        value.as_i64()
    }

    fn write(&self) -> Option<Value> {
        Some(json!(self))
    }
}

impl Json for i32 {
    fn read(value: &Value) -> Option<Self> {
        value.as_i64().and_then(|n| i32::try_from(n).ok())
    }

    fn write(&self) -> Option<Value> {
        Some(json!(self))
    }
}

/// `bytes` fields (Secret data, ConfigMap binaryData): standard base64 in JSON.
impl Json for Vec<u8> {
    fn read(value: &Value) -> Option<Self> {
        let url_alphabet =
            value.as_str()?.trim_end_matches('=').replace('+', "-").replace('/', "_");
        base64url_decode(&url_alphabet)
    }

    fn write(&self) -> Option<Value> {
        let text = base64url(self).replace('-', "+").replace('_', "/");
        let padding = "=".repeat((4 - text.len() % 4) % 4);
        Some(json!(text + &padding))
    }
}

impl Json for meta::Time {
    fn read(value: &Value) -> Option<Self> {
        let seconds = clock::parse_rfc3339(value.as_str()?)?;
        Some(meta::Time { seconds: Some(seconds), nanos: Some(0) })
    }

    fn write(&self) -> Option<Value> {
        self.seconds.map(|seconds| json!(clock::rfc3339(seconds)))
    }
}

/// Lease times: microseconds in JSON, nanoseconds in protobuf.
impl Json for meta::MicroTime {
    fn read(value: &Value) -> Option<Self> {
        let (seconds, micros) = clock::parse_rfc3339_micros(value.as_str()?)?;
        Some(meta::MicroTime { seconds: Some(seconds), nanos: Some(micros as i32 * 1000) })
    }

    fn write(&self) -> Option<Value> {
        let micros = self.nanos.unwrap_or(0) as u32 / 1000;
        self.seconds.map(|seconds| json!(clock::rfc3339_micros(seconds, micros)))
    }
}

/// `8080` or `"http"`: type 0 (int) or 1 (string); Go writes all three fields.
impl Json for IntOrString {
    fn read(value: &Value) -> Option<Self> {
        let (kind, int_val, str_val) = match value {
            Value::String(text) => (1, 0, text.clone()),
            number => (0, i32::read(number)?, String::new()),
        };
        Some(IntOrString { r#type: Some(kind), int_val: Some(int_val), str_val: Some(str_val) })
    }

    fn write(&self) -> Option<Value> {
        match self.r#type {
            Some(1) => self.str_val.write(),
            _ => self.int_val.write(),
        }
    }
}

/// `"500m"`, `"1Gi"`: kept as the string.
impl Json for Quantity {
    fn read(value: &Value) -> Option<Self> {
        Some(Quantity { string: String::read(value) })
    }

    fn write(&self) -> Option<Value> {
        self.string.write()
    }
}

macro_rules! read_field {
    ($value:ident, inline) => {
        Field::read($value)
    };
    ($value:ident, $key:literal) => {
        Field::read(&$value[$key])
    };
}

macro_rules! write_field {
    ($fields:ident, $field:expr, inline) => {
        if let Some(Value::Object(inner)) = Field::write(&$field) {
            $fields.extend(inner);
        }
    };
    ($fields:ident, $field:expr, $key:literal) => {
        if let Some(value) = Field::write(&$field) {
            $fields.insert($key.into(), value);
        }
    };
}

/// `Message { rust_field: "jsonField", ... }`: the mapped fields of each message; `inline`
/// for a Go embedded struct whose fields sit in the parent's JSON (`Volume.volumeSource`).
macro_rules! json_messages {
    ($($message:ty { $($field:ident: $key:tt),* $(,)? })*) => {$(
        impl Json for $message {
            // Some messages have every field mapped.
            #[allow(clippy::needless_update)]
            fn read(value: &Value) -> Option<Self> {
                value.is_object().then(|| Self {
                    $($field: read_field!(value, $key),)*
                    ..Default::default()
                })
            }

            fn write(&self) -> Option<Value> {
                let mut fields = Map::new();
                $(write_field!(fields, self.$field, $key);)*
                Some(Value::Object(fields))
            }
        }
    )*};
}

json_messages! {
    // --- meta/v1 ------------------------------------------------------------------------
    meta::ObjectMeta {
        name: "name", generate_name: "generateName", namespace: "namespace", uid: "uid",
        resource_version: "resourceVersion", generation: "generation",
        creation_timestamp: "creationTimestamp", deletion_timestamp: "deletionTimestamp",
        deletion_grace_period_seconds: "deletionGracePeriodSeconds", labels: "labels",
        annotations: "annotations", owner_references: "ownerReferences",
        finalizers: "finalizers",
    }
    meta::OwnerReference {
        api_version: "apiVersion", kind: "kind", name: "name", uid: "uid",
        controller: "controller", block_owner_deletion: "blockOwnerDeletion",
    }
    meta::ListMeta {
        resource_version: "resourceVersion", r#continue: "continue",
        remaining_item_count: "remainingItemCount",
    }
    meta::Status {
        metadata: "metadata", status: "status", message: "message", reason: "reason",
        details: "details", code: "code",
    }
    meta::StatusDetails {
        name: "name", group: "group", kind: "kind", uid: "uid", causes: "causes",
        retry_after_seconds: "retryAfterSeconds",
    }
    meta::StatusCause { reason: "reason", message: "message", field: "field" }
    meta::LabelSelector { match_labels: "matchLabels", match_expressions: "matchExpressions" }
    meta::LabelSelectorRequirement { key: "key", operator: "operator", values: "values" }

    // --- Pod ----------------------------------------------------------------------------
    corev1::Pod { metadata: "metadata", spec: "spec", status: "status" }
    corev1::PodSpec {
        volumes: "volumes", init_containers: "initContainers", containers: "containers",
        restart_policy: "restartPolicy",
        termination_grace_period_seconds: "terminationGracePeriodSeconds",
        dns_policy: "dnsPolicy", node_selector: "nodeSelector",
        service_account_name: "serviceAccountName", service_account: "serviceAccount",
        automount_service_account_token: "automountServiceAccountToken",
        node_name: "nodeName", host_network: "hostNetwork", hostname: "hostname",
        scheduler_name: "schedulerName", tolerations: "tolerations",
        priority_class_name: "priorityClassName", priority: "priority",
        enable_service_links: "enableServiceLinks", preemption_policy: "preemptionPolicy",
    }
    corev1::Container {
        name: "name", image: "image", command: "command", args: "args",
        working_dir: "workingDir", ports: "ports", env: "env", resources: "resources",
        volume_mounts: "volumeMounts", image_pull_policy: "imagePullPolicy",
        termination_message_path: "terminationMessagePath",
        termination_message_policy: "terminationMessagePolicy",
    }
    corev1::ContainerPort {
        name: "name", host_port: "hostPort", container_port: "containerPort",
        protocol: "protocol", host_ip: "hostIP",
    }
    corev1::EnvVar { name: "name", value: "value" }
    corev1::ResourceRequirements { limits: "limits", requests: "requests" }
    corev1::VolumeMount {
        name: "name", read_only: "readOnly", mount_path: "mountPath", sub_path: "subPath",
    }
    corev1::Toleration {
        key: "key", operator: "operator", value: "value", effect: "effect",
        toleration_seconds: "tolerationSeconds",
    }
    corev1::Volume { name: "name", volume_source: inline }
    corev1::VolumeSource {
        host_path: "hostPath", empty_dir: "emptyDir", secret: "secret",
        persistent_volume_claim: "persistentVolumeClaim", downward_api: "downwardAPI",
        config_map: "configMap", projected: "projected",
    }
    corev1::HostPathVolumeSource { path: "path", r#type: "type" }
    corev1::EmptyDirVolumeSource { medium: "medium", size_limit: "sizeLimit" }
    corev1::SecretVolumeSource {
        secret_name: "secretName", items: "items", default_mode: "defaultMode",
        optional: "optional",
    }
    corev1::ConfigMapVolumeSource {
        local_object_reference: inline, items: "items", default_mode: "defaultMode",
        optional: "optional",
    }
    corev1::PersistentVolumeClaimVolumeSource { claim_name: "claimName", read_only: "readOnly" }
    corev1::DownwardAPIVolumeSource { items: "items", default_mode: "defaultMode" }
    corev1::ProjectedVolumeSource { sources: "sources", default_mode: "defaultMode" }
    corev1::VolumeProjection {
        secret: "secret", downward_api: "downwardAPI", config_map: "configMap",
        service_account_token: "serviceAccountToken",
    }
    corev1::SecretProjection {
        local_object_reference: inline, items: "items", optional: "optional",
    }
    corev1::ConfigMapProjection {
        local_object_reference: inline, items: "items", optional: "optional",
    }
    corev1::DownwardAPIProjection { items: "items" }
    corev1::DownwardAPIVolumeFile { path: "path", field_ref: "fieldRef", mode: "mode" }
    corev1::ObjectFieldSelector { api_version: "apiVersion", field_path: "fieldPath" }
    corev1::ServiceAccountTokenProjection {
        audience: "audience", expiration_seconds: "expirationSeconds", path: "path",
    }
    corev1::KeyToPath { key: "key", path: "path", mode: "mode" }
    corev1::LocalObjectReference { name: "name" }
    corev1::PodStatus {
        phase: "phase", conditions: "conditions", message: "message", reason: "reason",
        host_ip: "hostIP", host_ips: "hostIPs", pod_ip: "podIP", pod_ips: "podIPs",
        start_time: "startTime", init_container_statuses: "initContainerStatuses",
        container_statuses: "containerStatuses", qos_class: "qosClass",
    }
    corev1::PodCondition {
        r#type: "type", status: "status", last_probe_time: "lastProbeTime",
        last_transition_time: "lastTransitionTime", reason: "reason", message: "message",
    }
    corev1::HostIp { ip: "ip" }
    corev1::PodIp { ip: "ip" }
    corev1::ContainerStatus {
        name: "name", state: "state", last_state: "lastState", ready: "ready",
        restart_count: "restartCount", image: "image", image_id: "imageID",
        container_id: "containerID", started: "started",
    }
    corev1::ContainerState { waiting: "waiting", running: "running", terminated: "terminated" }
    corev1::ContainerStateWaiting { reason: "reason", message: "message" }
    corev1::ContainerStateRunning { started_at: "startedAt" }
    corev1::ContainerStateTerminated {
        exit_code: "exitCode", signal: "signal", reason: "reason", message: "message",
        started_at: "startedAt", finished_at: "finishedAt", container_id: "containerID",
    }

    // --- Namespace, ConfigMap, Secret ---------------------------------------------------
    corev1::Namespace { metadata: "metadata", spec: "spec", status: "status" }
    corev1::NamespaceSpec { finalizers: "finalizers" }
    corev1::NamespaceStatus { phase: "phase" }
    corev1::ConfigMap {
        metadata: "metadata", immutable: "immutable", data: "data", binary_data: "binaryData",
    }
    corev1::Secret {
        metadata: "metadata", immutable: "immutable", data: "data", string_data: "stringData",
        r#type: "type",
    }

    // --- Service ------------------------------------------------------------------------
    corev1::Service { metadata: "metadata", spec: "spec", status: "status" }
    corev1::ServiceSpec {
        ports: "ports", selector: "selector", cluster_ip: "clusterIP", cluster_ips: "clusterIPs",
        r#type: "type", external_ips: "externalIPs", session_affinity: "sessionAffinity",
        external_name: "externalName", external_traffic_policy: "externalTrafficPolicy",
        ip_families: "ipFamilies", ip_family_policy: "ipFamilyPolicy",
        internal_traffic_policy: "internalTrafficPolicy",
    }
    corev1::ServicePort {
        name: "name", protocol: "protocol", app_protocol: "appProtocol", port: "port",
        target_port: "targetPort", node_port: "nodePort",
    }
    corev1::ServiceStatus { load_balancer: "loadBalancer" }
    corev1::LoadBalancerStatus { ingress: "ingress" }
    corev1::LoadBalancerIngress { ip: "ip", hostname: "hostname" }

    // --- Node ---------------------------------------------------------------------------
    corev1::Node { metadata: "metadata", spec: "spec", status: "status" }
    corev1::NodeSpec {
        pod_cidr: "podCIDR", pod_cid_rs: "podCIDRs", provider_id: "providerID",
        unschedulable: "unschedulable", taints: "taints",
    }
    corev1::Taint { key: "key", value: "value", effect: "effect", time_added: "timeAdded" }
    corev1::NodeStatus {
        capacity: "capacity", allocatable: "allocatable", phase: "phase",
        conditions: "conditions", addresses: "addresses", daemon_endpoints: "daemonEndpoints",
        node_info: "nodeInfo",
    }
    corev1::NodeCondition {
        r#type: "type", status: "status", last_heartbeat_time: "lastHeartbeatTime",
        last_transition_time: "lastTransitionTime", reason: "reason", message: "message",
    }
    corev1::NodeAddress { r#type: "type", address: "address" }
    corev1::NodeDaemonEndpoints { kubelet_endpoint: "kubeletEndpoint" }
    corev1::DaemonEndpoint { port: "Port" }
    corev1::NodeSystemInfo {
        machine_id: "machineID", system_uuid: "systemUUID", boot_id: "bootID",
        kernel_version: "kernelVersion", os_image: "osImage",
        container_runtime_version: "containerRuntimeVersion",
        kubelet_version: "kubeletVersion", kube_proxy_version: "kubeProxyVersion",
        operating_system: "operatingSystem", architecture: "architecture",
    }

    // --- Event --------------------------------------------------------------------------
    corev1::Event {
        metadata: "metadata", involved_object: "involvedObject", reason: "reason",
        message: "message", source: "source", first_timestamp: "firstTimestamp",
        last_timestamp: "lastTimestamp", count: "count", r#type: "type", action: "action",
        reporting_component: "reportingComponent", reporting_instance: "reportingInstance",
    }
    corev1::ObjectReference {
        kind: "kind", namespace: "namespace", name: "name", uid: "uid",
        api_version: "apiVersion", resource_version: "resourceVersion",
        field_path: "fieldPath",
    }
    corev1::EventSource { component: "component", host: "host" }

    // --- Deployment ---------------------------------------------------------------------
    apps::Deployment { metadata: "metadata", spec: "spec", status: "status" }
    apps::DeploymentSpec {
        replicas: "replicas", selector: "selector", template: "template",
        strategy: "strategy", min_ready_seconds: "minReadySeconds",
        revision_history_limit: "revisionHistoryLimit", paused: "paused",
        progress_deadline_seconds: "progressDeadlineSeconds",
    }
    corev1::PodTemplateSpec { metadata: "metadata", spec: "spec" }
    apps::DeploymentStrategy { r#type: "type" }
    apps::DeploymentStatus {
        observed_generation: "observedGeneration", replicas: "replicas",
        updated_replicas: "updatedReplicas", ready_replicas: "readyReplicas",
        available_replicas: "availableReplicas", unavailable_replicas: "unavailableReplicas",
        conditions: "conditions",
    }
    apps::DeploymentCondition {
        r#type: "type", status: "status", last_update_time: "lastUpdateTime",
        last_transition_time: "lastTransitionTime", reason: "reason", message: "message",
    }

    // --- Lease --------------------------------------------------------------------------
    coordinationv1::Lease { metadata: "metadata", spec: "spec" }
    coordinationv1::LeaseSpec {
        holder_identity: "holderIdentity", lease_duration_seconds: "leaseDurationSeconds",
        acquire_time: "acquireTime", renew_time: "renewTime",
        lease_transitions: "leaseTransitions",
    }

    // --- EndpointSlice ------------------------------------------------------------------
    discoveryv1::EndpointSlice {
        metadata: "metadata", address_type: "addressType", endpoints: "endpoints",
        ports: "ports",
    }
    discoveryv1::Endpoint {
        addresses: "addresses", conditions: "conditions", hostname: "hostname",
        target_ref: "targetRef", node_name: "nodeName", zone: "zone", hints: "hints",
    }
    discoveryv1::EndpointConditions {
        ready: "ready", serving: "serving", terminating: "terminating",
    }
    discoveryv1::EndpointHints { for_zones: "forZones" }
    discoveryv1::ForZone { name: "name" }
    discoveryv1::EndpointPort {
        name: "name", protocol: "protocol", port: "port", app_protocol: "appProtocol",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, seed};

    fn unknown_of(body: &[u8]) -> kruntime::Unknown {
        open_envelope(body).unwrap()
    }

    #[test]
    fn every_served_builtin_kind_has_a_mapping() {
        for resource in RESOURCES.iter().filter(|r| r.builtin) {
            let kind = Kind::of(resource.kind).unwrap_or_else(|| panic!("{}", resource.kind));
            assert_eq!(kind.api_version(), resource.api_version());
        }
        assert_eq!(Kind::of("Widget"), None);
    }

    #[test]
    fn seed_objects_round_trip_through_protobuf() {
        for (_, _, mut object) in seed().into_iter().filter(|(plural, ..)| *plural != "widgets") {
            object["metadata"]["uid"] = json!("u-1");
            object["metadata"]["resourceVersion"] = json!("7");
            object["metadata"]["creationTimestamp"] = json!("2024-05-01T12:34:56Z");
            let kind = Kind::of(object["kind"].as_str().unwrap()).unwrap();
            let decoded = decode(kind, &encode(kind, &object)).unwrap();
            assert_eq!(decoded, object, "{kind:?}");
        }
    }

    #[test]
    fn envelope_carries_type_meta_and_empty_encoding_fields() {
        let body = encode(Kind::Deployment, &json!({ "metadata": { "name": "web" } }));
        let unknown = unknown_of(&body);
        let type_meta = unknown.type_meta.unwrap();
        assert_eq!(type_meta.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(type_meta.kind.as_deref(), Some("Deployment"));
        assert_eq!(unknown.content_encoding.as_deref(), Some(""));
        assert_eq!(unknown.content_type.as_deref(), Some(""));
        let deployment = apps::Deployment::decode(unknown.raw.unwrap().as_slice()).unwrap();
        let metadata = deployment.metadata.unwrap();
        assert_eq!(metadata.name.as_deref(), Some("web"));
        assert_eq!(metadata.namespace.as_deref(), Some(""), "written empty, as Go does");
    }

    #[test]
    fn a_list_is_byte_identical_to_the_generated_pod_list() {
        let pods: Vec<Value> = seed()
            .into_iter()
            .filter(|(plural, ..)| *plural == "pods")
            .map(|(_, _, mut pod)| {
                pod.as_object_mut().unwrap().remove("kind");
                pod
            })
            .collect();
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": { "resourceVersion": "42", "continue": "abc", "remainingItemCount": 3 },
            "items": pods,
        });
        let unknown = unknown_of(&encode(Kind::Pod, &list));
        assert_eq!(unknown.type_meta.unwrap().kind.as_deref(), Some("PodList"));
        let raw = unknown.raw.unwrap();
        let decoded = corev1::PodList::decode(raw.as_slice()).unwrap();
        assert_eq!(decoded.items.len(), 3);
        assert_eq!(decoded.items[1].spec.as_ref().unwrap().node_name.as_deref(), Some("edge-2"));
        let metadata = decoded.metadata.as_ref().unwrap();
        assert_eq!(metadata.remaining_item_count, Some(3));
        assert_eq!(decoded.encode_to_vec(), raw, "the generic list layout is PodList's");
    }

    #[test]
    fn a_status_is_enveloped_as_v1_status() {
        let error = crate::status::ApiError::not_found("pods", "gone");
        let unknown = unknown_of(&encode(Kind::Pod, &error.to_status()));
        let type_meta = unknown.type_meta.unwrap();
        assert_eq!(
            (type_meta.api_version.as_deref(), type_meta.kind.as_deref()),
            (Some("v1"), Some("Status"))
        );
        let status = meta::Status::decode(unknown.raw.unwrap().as_slice()).unwrap();
        assert_eq!(status.code, Some(404));
        assert_eq!(status.reason.as_deref(), Some("NotFound"));
        assert_eq!(status.details.unwrap().name.as_deref(), Some("gone"));
    }

    #[test]
    fn secret_bytes_are_base64_in_json_and_raw_in_protobuf() {
        let secret =
            json!({ "metadata": { "name": "s" }, "data": { "a": "czNjcjN0", "b": "/+8=" } });
        let raw = unknown_of(&encode(Kind::Secret, &secret)).raw.unwrap();
        let message = corev1::Secret::decode(raw.as_slice()).unwrap();
        assert_eq!(message.data["a"], b"s3cr3t");
        assert_eq!(message.data["b"], [0xff, 0xef]);
        assert_eq!(message.write().unwrap()["data"], secret["data"]);
    }

    #[test]
    fn int_or_string_and_inlined_fields_keep_their_json_shape() {
        let ports =
            json!([{ "port": 80, "targetPort": "http" }, { "port": 443, "targetPort": 6443 }]);
        let service = corev1::Service::read(&json!({ "spec": { "ports": ports } })).unwrap();
        assert_eq!(service.write().unwrap()["spec"]["ports"], ports);
        let volume = json!({ "name": "config", "configMap": { "name": "app-config" } });
        let pod = corev1::Pod::read(&json!({ "spec": { "volumes": [volume] } })).unwrap();
        assert_eq!(pod.write().unwrap()["spec"]["volumes"][0], volume);
    }

    #[test]
    fn a_watch_event_wraps_the_enveloped_object() {
        let object = encode(Kind::Pod, &json!({ "metadata": { "resourceVersion": "9" } }));
        let event = meta::WatchEvent::decode(watch_event("BOOKMARK", object.clone()).as_slice());
        let event = event.unwrap();
        assert_eq!(event.r#type.as_deref(), Some("BOOKMARK"));
        assert_eq!(event.object.unwrap().raw.unwrap(), object);
    }

    #[test]
    fn bodies_without_magic_or_with_garbage_are_refused() {
        assert!(matches!(decode(Kind::Pod, b"{}"), Err(DecodeError::NoMagic)));
        assert!(matches!(decode(Kind::Pod, b"k8s\0\xff\xff"), Err(DecodeError::Envelope(_))));
        let garbage = envelope("v1", "Pod", vec![0x0a, 0xff]);
        assert!(matches!(decode(Kind::Pod, &garbage), Err(DecodeError::Object(_))));
    }
}
