use std::fmt;

/// Row-major tensor shape, outermost dimension first; the last dimension is contiguous.
///
/// GGUF stores dimensions innermost first (ggml's `ne`); readers reverse them into this order,
/// so a linear layer's weight is `[out_features, in_features]` in both GGUF and safetensors.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("shape {0:?} has more elements than fit in memory")]
    Overflow(Vec<usize>),
}

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Shape {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements, or an error when the product overflows.
    pub fn checked_count(&self) -> Result<usize, ShapeError> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| ShapeError::Overflow(self.0.clone()))
    }

    /// Number of elements; only call on shapes already validated with [`Shape::checked_count`].
    pub fn count(&self) -> usize {
        self.0.iter().product()
    }

    /// Size of the last (contiguous) dimension; 1 for a scalar.
    pub fn cols(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        let n = self.0.len();
        if n == 0 {
            1
        } else {
            self.0[..n - 1].iter().product()
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Shape {
        Shape(d.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let s = Shape::from([3, 4, 5]);
        assert_eq!(s.count(), 60);
        assert_eq!(s.rows(), 12);
        assert_eq!(s.cols(), 5);
        assert!(Shape::from([usize::MAX, 2]).checked_count().is_err());
    }
}
