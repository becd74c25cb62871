//! LLM specifics: finding the model in a request body (more — SSE parsing,
//! usage accounting, provider quirks — joins here with later issues).

pub mod model;
