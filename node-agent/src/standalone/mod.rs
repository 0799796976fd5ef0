//! standalone (in progress)
