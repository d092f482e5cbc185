//! The conformance suite every backend must pass, against a scalar reference of each op.
