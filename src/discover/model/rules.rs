//! An ALB listener's rules as `DescribeRules` describes them (being written).
