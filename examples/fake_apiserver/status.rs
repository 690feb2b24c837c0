//! Kubernetes `Status` errors: what every failed request (and a watch ERROR event) carries,
//! in JSON or, for a client that asks protobuf first, in protobuf.

use serde_json::{Value, json};

use crate::http::Response;
use crate::protobuf;
use crate::repr::{PROTOBUF, protobuf_first};

/// A failure answered as a `v1.Status` with the HTTP code `code`.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `(name, kind)` for `details`, when the error is about one object.
    pub details: Option<(String, String)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn not_found_path() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// `pods "x" not found`, with details, as kube words it.
    pub fn not_found(resource: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .about(resource, name)
    }

    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .about(resource, name)
    }

    pub fn conflict(resource: &str, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
        ApiError::new(409, "Conflict", message).about(resource, name)
    }

    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(410, "Expired", format!("too old resource version: {requested} ({oldest})"))
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    fn about(mut self, resource: &str, name: &str) -> ApiError {
        self.details = Some((name.to_string(), resource.to_string()));
        self
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, kind)) = &self.details {
            status["details"] = json!({ "name": name, "kind": kind });
        }
        status
    }

    pub fn to_response(&self) -> Response {
        Response::json(self.code, &self.to_status())
    }

    /// The Status in whichever of JSON and protobuf comes first in `accept` (JSON when
    /// neither does), as kube negotiates its errors.
    pub fn to_response_for(&self, accept: Option<&str>) -> Response {
        match protobuf_first(accept) {
            Some(true) => {
                Response::new(self.code, PROTOBUF, protobuf::encode_status(&self.to_status()))
            }
            _ => self.to_response(),
        }
    }
}
