//! The synthetic weights and inputs of the golden tests live in the library
//! (`webdistill::golden`, shared with `webdistill report`); the tests use them from here.
#[allow(unused_imports)]
pub use webdistill::golden::*;
