//! Service-account token verification with the cloud issuer's keys: (being written).
