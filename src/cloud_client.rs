//! A blocking one-shot HTTPS GET to the cloud apiserver for helper threads: (being written).
