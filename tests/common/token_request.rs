//! TokenRequest bodies and answers in protobuf, built and read with the real generated
//! Kubernetes types (k8s-pb), as client-go encodes them for kubelet: `k8s\0` +
//! `runtime.Unknown` around the message (see `protobuf`).

use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;

use super::protobuf::{decode, envelope};

/// A TokenRequest bound to pod `pod` of `uid`, for `audiences` (none: the apiserver's own).
pub fn protobuf_body(audiences: &[&str], expiration_seconds: i64, pod: &str, uid: &str) -> Vec<u8> {
    let request = authn::TokenRequest {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authn::TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(pod.into()),
                u_id: Some(uid.into()),
            }),
        }),
        status: Some(authn::TokenRequestStatus::default()),
    };
    envelope("authentication.k8s.io/v1", "TokenRequest", request.encode_to_vec())
}

/// `status.token` of a protobuf TokenRequest answer; panics when it is not one.
pub fn protobuf_answer_token(body: &[u8]) -> String {
    let answer: authn::TokenRequest = decode(body, "TokenRequest");
    answer.status.and_then(|s| s.token).expect("status.token")
}
