//! Test support: real nats-server processes for integration tests.
