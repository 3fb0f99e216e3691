//! `--output jsonl`: observations as JSON Lines on stdout (reports go through [`crate::report`]).

pub mod jsonl;

pub use jsonl::JsonlWriter;
