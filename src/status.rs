//! Responses lite-apiserver writes itself: Kubernetes `Status` errors and replays
//! from the cache. Every error a client sees from us is a `Status` object, as
//! kube-apiserver would send, so client-go and kubectl print a useful message.

/// A complete response to write to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub content_type: String,
    pub extra_headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after it (the request stream can't be trusted).
    pub close: bool,
}

impl LocalResponse {
    /// A Kubernetes `Status` failure.
    pub fn status(code: u16, reason: &str, message: &str) -> LocalResponse {
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        LocalResponse {
            status: code,
            content_type: "application/json".into(),
            extra_headers: Vec::new(),
            body: body.to_string().into_bytes(),
            close: false,
        }
    }

    pub fn closing(mut self) -> LocalResponse {
        self.close = true;
        self
    }

    pub fn bad_request(message: &str) -> LocalResponse {
        LocalResponse::status(400, "BadRequest", message).closing()
    }

    pub fn cloud_unavailable(message: &str) -> LocalResponse {
        LocalResponse::status(503, "ServiceUnavailable", message)
    }

    /// Head and body as bytes, for an HTTP/1.`minor_version` client.
    pub fn to_bytes(&self, minor_version: u8, head_only: bool) -> Vec<u8> {
        let body_len = if head_only { 0 } else { self.body.len() };
        let mut out = Vec::with_capacity(512 + body_len);
        out.extend_from_slice(
            format!(
                "HTTP/1.{minor_version} {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n",
                self.status,
                reason_phrase(self.status),
                self.content_type,
                self.body.len()
            )
            .as_bytes(),
        );
        for (name, value) in &self.extra_headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The head of a streamed (chunked) response we generate: offline watches.
pub fn chunked_head(minor_version: u8, content_type: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.{minor_version} 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n"
    )
    .into_bytes();
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_is_a_kubernetes_status() {
        let response = LocalResponse::cloud_unavailable("cloud unreachable");
        let body: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["code"], 503);
        assert_eq!(body["reason"], "ServiceUnavailable");
        let bytes = String::from_utf8(response.to_bytes(1, false)).expect("utf8");
        assert!(bytes.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(bytes.contains(&format!("Content-Length: {}\r\n", response.body.len())));
    }
}
