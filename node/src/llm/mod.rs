//! LLM specifics: finding the model in a request body, and token
//! accounting (a request's expected cost, a response's reported usage).

pub mod json;
pub mod model;
pub mod usage;
