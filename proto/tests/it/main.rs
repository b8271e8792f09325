//! The integration tests of `proto`, one test binary: each module was its own binary before.

mod support;

mod authorization_bounds;
mod aws_sigv4a;
mod calendar_dates;
mod delegation;
mod documented_limits;
mod error_code_tables;
mod fuzz_props;
mod hws1_rules;
mod percent_encoding;
mod properties;
mod protocol_doc;
mod request_bounds;
mod rfc9421;
mod signature_encoding;
mod structured_field_bounds;
mod webauthn;
mod wire_details;
