//! Integration tests: the real component, loaded by the harness, against loopback upstreams.
