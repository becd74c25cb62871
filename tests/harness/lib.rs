//! Harness for end-to-end tests: starts real llmgw processes on ephemeral ports.
