//! placeholder
pub trait Listener {}
pub struct ListenerRegistration;
