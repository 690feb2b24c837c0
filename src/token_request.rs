//! TokenRequest (serviceaccounts/<sa>/token) bodies in JSON and protobuf: (being written).
