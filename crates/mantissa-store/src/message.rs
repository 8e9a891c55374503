//! placeholder
pub trait Message {}
pub struct MessageId;
pub enum MessageState {}
pub struct MessageRegistration;
