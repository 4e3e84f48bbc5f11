//! Offers: the registry of live offers and the matcher that places pods on them.

mod inventory;
mod matcher;
pub mod reasons;
pub mod registry;

pub use inventory::{ExecutorState, Inventory, Slot, labels, valid_label_value};
pub use matcher::{Assignment, Matcher, Outcome, Policy, Unplaced, place_all};
pub use reasons::Reason;
pub use registry::{OfferRegistry, RegistryConfig};
