//! Server selection: one balancer per backend (in progress).
