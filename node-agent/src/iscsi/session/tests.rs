//! Transcript tests of the session state machine.
