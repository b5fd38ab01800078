//! The meta-router side of the method (spec sections 5 and 6): outcome discovery ([`oracle`]),
//! the model-backed loss it scores ([`scoring`]), router inputs ([`features`]), and a finished run
//! opened for inference in its three compositions ([`routed`]).

pub mod dataset;
pub mod discovery;
pub mod evaluate;
pub mod features;
pub mod oracle;
pub mod pipeline;
pub mod routed;
pub mod scoring;
