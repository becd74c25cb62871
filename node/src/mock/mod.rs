//! The mock LLM provider (in progress).
