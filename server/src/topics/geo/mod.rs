//! Geofencing building blocks: the detection of fence events from (previous, current) positions, and
//! the spatial indexes that find candidate fences and nearby objects. The `geo:<tenant>` topic that
//! serves them to clients builds on these.

pub mod detect;
pub mod index;
