//! The edge daemon. So far: what this host offers (its capacity), for `skiff info` and, later,
//! registration with the control plane.

pub mod capacity;
