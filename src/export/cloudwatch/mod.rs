//! CloudWatch export. `encode` turns recorded latency into what `PutMetricData` accepts
//! (Values/Counts distributions within the API's limits), as pure functions.

pub mod datum;
pub mod encode;
