//! The meta-router side of the method (spec sections 5 and 6): outcome discovery, the model-backed
//! losses it scores, router features, routed inference.

pub mod oracle;
