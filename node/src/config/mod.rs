//! Configuration: the compiled model and the readers that produce it.

pub mod model;

pub use model::*;
