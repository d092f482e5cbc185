//! One file per model architecture; builds the forward-pass graph from weights and hyperparameters.
