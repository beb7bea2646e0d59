//! `hbwatch top`: a live status board of every association.
//!
//! [`model`] is the snapshot a running agent serves (association table + recent
//! events, one JSON object) and the board's sorting and filtering of it; [`board`]
//! draws one frame of it with ratatui, rendering only the visible rows.

pub mod app;
pub mod board;
pub mod model;
pub mod status;
