//! Types every Tessera crate shares: element types (plain and block-quantized) and shapes.
//!
//! This crate knows nothing about files, devices or models.

mod dtype;
mod shape;

pub use dtype::{DType, DTypeError};
pub use shape::{Shape, ShapeError};
