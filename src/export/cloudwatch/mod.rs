//! CloudWatch export. Rounds are summed per flush period (`period`), turned into datums
//! within `PutMetricData`'s limits (`encode`, `datum`) or into Embedded Metric Format lines
//! (`emf`), and published in the background (`publish`) from a bounded buffer (`buffer`)
//! that survives outages and counts what it had to drop.

pub mod buffer;
pub mod datum;
pub mod emf;
pub mod encode;
pub mod period;
pub mod publish;
