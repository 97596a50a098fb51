//! hasync crate tests: the seeded loss simulation, proptests of the framing, and the fuzz corpus
//! replay.
#![allow(clippy::unwrap_used, missing_docs)]

mod corpus;
mod props;
mod sim;
