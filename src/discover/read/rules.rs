//! `DescribeRules` (being written).
