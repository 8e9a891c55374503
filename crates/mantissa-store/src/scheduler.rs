//! placeholder
pub trait Scheduled {}
pub struct ScheduleEntry;
pub struct ScheduledRegistration;
