//! Which rule of an ALB listener a request meets (being written).
